"""Selection on hand-built embeddings; flow, warp and occlusion on a known translation (no torch)."""
from __future__ import annotations

import numpy as np
import pytest

from crowdprop.video.flow import clip_flows, dis_flow, occlusion, propagate, warp
from crowdprop.video.select import keyframes, select
from crowdprop.video.units import pixel_uncertainty, pooled, unit_maps, unit_truth


def _blobs():
    """Three tight uncertain clusters (12 points each, centres known) and a certain decoy cluster."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    emb, unc = [], []
    for c in centres:
        emb.append(c + rng.normal(0, 0.3, (12, 2)))
        unc.append(rng.uniform(0.8, 1.0, 12))
    emb.append(np.array([30.0, 30.0]) + rng.normal(0, 0.3, (36, 2)))  # certain half: never picked
    unc.append(rng.uniform(0.0, 0.2, 36))
    return np.concatenate(emb), np.concatenate(unc), centres


def test_active_picks_the_unit_nearest_each_centre_of_the_uncertain_half():
    emb, unc, centres = _blobs()
    got = select(unc, emb, 3, np.random.default_rng(1), method="active")
    assert len(got) == 3 and (got < 36).all()  # all from the uncertain half
    for k, c in enumerate(centres):
        members = np.arange(12 * k, 12 * (k + 1))
        mean = emb[members].mean(0)  # the k-means centre of that cluster
        nearest = members[np.argmin(((emb[members] - mean) ** 2).sum(1))]
        assert nearest in got


def test_active_respects_candidates_and_baselines():
    emb, unc, _ = _blobs()
    cand = np.ones(len(unc), bool)
    cand[:12] = False  # the first cluster and a third of the decoys were asked already
    cand[36:48] = False
    got = select(unc, emb, 2, np.random.default_rng(1), method="active", candidates=cand)
    assert set(got // 12) == {1, 2}
    top = select(unc, emb, 5, np.random.default_rng(1), method="uncertainty")
    assert set(top) == set(np.argsort(-unc)[:5])
    r1 = select(unc, emb, 5, np.random.default_rng(3), method="random")
    assert len(set(r1)) == 5 and np.array_equal(r1, select(unc, emb, 5, np.random.default_rng(3), method="random"))
    assert list(keyframes(12, np.zeros(12, bool), 3)) == [0, 5, 11]
    assert list(keyframes(12, np.isin(np.arange(12), [0, 5, 11]), 2)) == [2, 8]


def test_units_uncertainty_and_truth():
    maps, table = unit_maps("patch", shape=(2, 8, 8), patch=4)
    assert len(table) == 8 and maps[1, 0, 0] == 4 and maps[0, 7, 7] == 3
    probs = np.zeros((2, 2, 8, 8))
    probs[:, 0] = 1.0
    probs[0, :, :4, :4] = 0.5  # unit 0 is maximally unsure
    ent = pooled(maps, pixel_uncertainty(probs), 8)
    assert ent[0] == pytest.approx(np.log(2)) and ent[1:].max() == pytest.approx(0, abs=1e-6)
    marg = pooled(maps, pixel_uncertainty(probs, "margin"), 8)
    assert marg[0] == pytest.approx(1.0) and marg[1] == pytest.approx(0.0, abs=1e-6)
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[0, :4, :3] = 1  # unit 0: 12 of 16 pixels class 1 -> mixed at 0.8, class 1 at 0.7
    truth, share = unit_truth(maps, labels, 8, 2, mixed_below=0.8)
    assert truth[0] == -1 and share[0] == pytest.approx(0.75)
    truth, _ = unit_truth(maps, labels, 8, 2, mixed_below=0.7)
    assert truth[0] == 1 and truth[1] == 0


def test_flow_of_a_known_translation(shifted):
    a, b, d = shifted
    f = dis_flow(a, b)
    inner = f[4:-6, 4:-6]
    assert np.abs(inner[..., 0] - d[0]).mean() < 0.3 and np.abs(inner[..., 1] - d[1]).mean() < 0.3
    back = warp(b.astype(np.float32), f)  # b brought into a's grid
    assert np.abs(back[4:-6, 4:-6] - a[4:-6, 4:-6]).mean() < 4.0
    assert np.abs(b[4:-6, 4:-6].astype(float) - a[4:-6, 4:-6]).mean() > 15  # the shift is visible


def test_occlusion_marks_what_leaves_the_frame(shifted):
    a, b, d = shifted
    f, fb = dis_flow(a, b), dis_flow(b, a)
    occ = occlusion(f, fb)
    h, w = occ.shape
    # pixels of a in the last 3 columns / 2 rows go out of b: occluded; the middle is visible
    assert occ[:, w - 2:].all() and occ[h - 1:, :].all()
    assert occ[4:h - 6, 4:w - 6].mean() < 0.05
    # exact flows: the band that moves out is exactly the occluded set
    exact = np.broadcast_to(np.float32(d), (h, w, 2)).copy()
    occ_exact = occlusion(exact, -exact)
    assert occ_exact[:, : w - 3].sum() == occ_exact[h - 2:, : w - 3].sum()
    assert occ_exact[:, w - 3:].all() and not occ_exact[: h - 2, : w - 3].any()


def test_propagation_carries_a_keyframe_along_the_flow(tiny_clip):
    fwd, bwd, of, ob = clip_flows(tiny_clip.frames)
    known = np.zeros(tiny_clip.labels.shape, bool)
    known[2] = True
    lab, reached = propagate(tiny_clip.labels.astype(np.int64), known, fwd, bwd, of, ob)
    assert np.array_equal(lab[2], tiny_clip.labels[2])
    for t in (1, 3):  # the next frames: mostly right where reached
        m = reached[t]
        assert m.mean() > 0.6 and (lab[t][m] == tiny_clip.labels[t][m]).mean() > 0.9


def test_without_torch_video_says_what_to_install(monkeypatch, capsys, tmp_path):
    import sys

    from crowdprop.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert main(["video", "replay", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'crowdprop[detect]'" in err[0] and "torch" in err[0]
    assert not (tmp_path / "r").exists()


def test_active_on_many_units_matches_the_whole_distance_matrix():
    """The nearest member of each centre is found a block of rows at a time (a long video's
    uncertain half does not fit len(half) x b x width at once); the picks are those of the whole
    matrix."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    n, b = 5000, 40
    emb, unc = rng.normal(size=(n, 64)), rng.random(n)
    got = select(unc, emb, b, np.random.default_rng(9))
    half = np.lexsort((np.arange(n), -unc))[:(n + 1) // 2]
    assert 2 ** 22 // (b * 64) < len(half)  # more than one block of rows
    km = KMeans(n_clusters=b, n_init=3, random_state=int(np.random.default_rng(9).integers(2 ** 31 - 1))).fit(emb[half])
    d = ((emb[half][:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    taken, want = np.zeros(len(half), bool), []
    for j in range(b):
        i = next(i for i in np.argsort(d[:, j], kind="stable") if not taken[i])
        taken[i] = True
        want.append(half[i])
    assert np.array_equal(got, np.sort(want)) and len(got) == b
