"""crowdprop synth: synthetic prediction sets load through crowdprop's readers and keep their promises."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask

from crowdprop.cli import main
from crowdprop.errors import InputError
from crowdprop.features.load import load_features
from crowdprop.masks import load_ground_truth, load_predictions, rle
from crowdprop.replay import synth as synth_mod
from crowdprop.replay.synth import (ELLIPSE, POLYGON, RECTANGLE, _shape_intervals, _unit_vertices,
                                    interval_area_bbox, interval_iou, intervals_to_rle, make_synthetic,
                                    write_synthetic)

N, C, SEED = 1500, 6, 3


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    s = make_synthetic(N, C, seed=SEED, progress=False)
    out = tmp_path_factory.mktemp("synth") / "set"
    write_synthetic(s, out)
    gt = load_ground_truth(out / "gt.json")
    df = load_predictions(out / "predictions.json", gt)
    return s, out, gt, df


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ----------------------------------------------------------------- files and loading


def test_files_load_and_counts(made):
    s, out, gt, df = made
    assert sorted(p.name for p in out.iterdir()) == sorted(synth_mod.FILES)
    assert len(df) == N
    assert df["mask_id"].tolist() == list(range(1, N + 1))
    assert len(gt.categories) == C
    assert gt.categories["name"].tolist() == [f"synthetic-class-{k}" for k in range(1, C + 1)]
    assert sorted(df["category_id"].unique()) == list(range(1, C + 1))  # every class has masks
    assert (gt.images["file_name"] == [f"synthetic_{i:08d}.png" for i in gt.images["id"]]).all()
    assert (gt.images["coco_url"] == "").all()
    assert (gt.images["height"] == 64).all() and (gt.images["width"] == 64).all()
    assert df["pred_iou"].notna().all()
    raw = json.loads((out / "predictions.json").read_text())
    assert all(isinstance(r["segmentation"]["counts"], str) for r in raw)
    raw_gt = json.loads((out / "gt.json").read_text())
    assert all(isinstance(a["segmentation"]["counts"], str) for a in raw_gt["annotations"])
    # several instances per image, on average
    assert len(gt.annotations) / len(gt.images) > 2.5


def test_gt_area_and_bbox_agree_with_pycocotools(made):
    s, out, gt, df = made
    a = gt.annotations
    stored = s.gt["annotations"]
    np.testing.assert_array_equal(a["area"].to_numpy(), [r["area"] for r in stored])
    boxes = rle.bbox(a["rle"].tolist(), a["height"].tolist(), a["width"].tolist())
    np.testing.assert_array_equal(boxes, np.array([r["bbox"] for r in stored]))
    assert (a["area"] > 0).all()


def test_recorded_true_iou_equals_crowdprop_gt_iou(made):
    s, out, gt, df = made
    np.testing.assert_array_equal(df["gt_iou"].to_numpy(), s.true_iou)
    lat = np.load(out / "latent.npz")
    np.testing.assert_array_equal(lat["true_iou"], s.true_iou)
    np.testing.assert_array_equal(lat["id"], df["mask_id"].to_numpy())


def test_true_iou_recomputed_from_dense_masks(made):
    """Decode masks and compute IoU with every same-class instance by counting pixels."""
    s, out, gt, df = made
    ann = gt.annotations
    rng = np.random.default_rng(0)
    for i in rng.choice(N, size=150, replace=False):
        r = df.iloc[i]
        m = rle.decode(r["rle"], r["height"], r["width"]).astype(bool)
        cands = ann[(ann["image_id"] == r["image_id"]) & (ann["category_id"] == r["category_id"])]
        best = 0.0
        for g in cands.itertuples():
            gm = rle.decode(g.rle, g.height, g.width).astype(bool)
            best = max(best, (m & gm).sum() / (m | gm).sum())
        assert s.true_iou[i] == pytest.approx(best, abs=1e-12)
    # the source instance is one of the candidates, so the best match is at least as good
    src = dict(zip(ann["id"], ann["rle"]))
    for i in rng.choice(N, size=50, replace=False):
        g = rle.decode(src[int(s.source_ann_id[i])], 64, 64).astype(bool)
        m = rle.decode(df["rle"].iloc[i], 64, 64).astype(bool)
        assert s.true_iou[i] >= (m & g).sum() / (m | g).sum() - 1e-12


def test_features_shape_and_alignment(made):
    s, out, gt, df = made
    x = load_features(out / "features.npy", df)
    assert x.shape == (N, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x, s.features)
    # features cluster by class: nearest class centroid recovers the category of the same row
    cat = df["category_id"].to_numpy()
    cents = np.stack([x[cat == k].mean(axis=0) for k in range(1, C + 1)])
    pred = 1 + np.argmin(((x[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    assert (pred == cat).mean() > 0.95
    # ... and by latent mode, much tighter within a mode than between modes of a class
    mode = s.mode
    within, between = [], []
    for m in np.unique(mode):
        rows = x[mode == m]
        if len(rows) > 1:
            within.append(np.linalg.norm(rows - rows.mean(0), axis=1).mean())
    for k in range(1, C + 1):
        ms = np.unique(mode[cat == k])
        c = np.stack([x[mode == m].mean(0) for m in ms])
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)
        between.append(d[np.triu_indices(len(ms), 1)].min())
    assert np.median(within) < 0.5 * np.min(between)
    # rows shuffled: the class structure disappears
    rng = np.random.default_rng(1)
    xs = x[rng.permutation(N)]
    cents = np.stack([xs[cat == k].mean(axis=0) for k in range(1, C + 1)])
    pred = 1 + np.argmin(((xs[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    assert (pred == cat).mean() < 0.6


# ----------------------------------------------------------------- structure


def test_modes_classes_and_quality_levels(made):
    s, out, gt, df = made
    cat = df["category_id"].to_numpy()
    assert (s.mode_category[s.mode] == cat).all()
    sizes = np.bincount(cat, minlength=C + 1)[1:]
    assert sizes.max() > 3 * sizes.min()  # uneven, Zipf-like
    for k in range(1, C + 1):
        n_modes = len(np.unique(s.mode[cat == k]))
        assert min(5, sizes[k - 1]) <= n_modes <= 50
    kinds = s.mode_kind[s.mode]
    assert set(np.unique(kinds)) == {"good", "bad", "mixed"}
    assert (s.true_iou[kinds == "good"] > 0.75).mean() > 0.8
    assert (s.true_iou[kinds == "bad"] < 0.5).mean() > 0.9
    mixed = s.true_iou[kinds == "mixed"]
    assert 0.1 < (mixed > 0.75).mean() < 0.9 and (mixed < 0.5).mean() > 0.05
    # the perturbation hits its target closely (pixel rounding and overlaps aside)
    assert np.median(np.abs(s.true_iou - s.target_iou)) < 0.02
    # every ground-truth instance of a prediction is in the same image and class
    ann = gt.annotations.set_index("id")
    src = ann.loc[s.source_ann_id]
    assert (src["image_id"].to_numpy() == df["image_id"].to_numpy()).all()
    assert (src["category_id"].to_numpy() == cat).all()
    # some instances are never predicted (missed objects), some more than once
    counts = np.bincount(s.source_ann_id, minlength=len(ann) + 1)[1:]
    assert (counts == 0).any() and (counts > 1).any()


@pytest.mark.parametrize("seed", [0, 11])
def test_score_and_pred_iou_correlate_with_true_iou(seed):
    # documented in crowdprop.replay.synth: score ~0.5 (0.42-0.58), pred_iou ~0.75 (0.67-0.81)
    s = make_synthetic(3000, 12, seed=seed, progress=False)
    score = np.array([r["score"] for r in s.predictions])
    piou = np.array([r["pred_iou"] for r in s.predictions])
    assert 0.35 < np.corrcoef(score, s.true_iou)[0, 1] < 0.65
    assert 0.60 < np.corrcoef(piou, s.true_iou)[0, 1] < 0.88
    assert ((score >= 0) & (score <= 1)).all() and ((piou >= 0) & (piou <= 1)).all()


def test_no_pred_iou(tmp_path):
    s = make_synthetic(200, 3, seed=1, with_pred_iou=False, progress=False)
    assert all("pred_iou" not in r for r in s.predictions)
    write_synthetic(s, tmp_path / "d")
    df = load_predictions(tmp_path / "d" / "predictions.json")
    assert df["pred_iou"].isna().all()
    assert "pred_iou=False" in s.gt["info"]["description"]
    assert "--no-pred-iou" in (tmp_path / "d" / "README.txt").read_text()


def test_other_sizes_load(tmp_path):
    s = make_synthetic(300, 300, seed=5, image_size=16, feature_dim=3, progress=False)
    write_synthetic(s, tmp_path / "d")
    gt = load_ground_truth(tmp_path / "d" / "gt.json")
    df = load_predictions(tmp_path / "d" / "predictions.json", gt)
    assert len(gt.categories) == 300 and df["category_id"].nunique() == 300
    assert s.features.shape == (300, 3)
    np.testing.assert_array_equal(df["gt_iou"].to_numpy(), s.true_iou)


@pytest.mark.parametrize("bad", [dict(n_masks=3, n_classes=4), dict(n_masks=3, n_classes=0),
                                 dict(n_masks=10, n_classes=2, image_size=8),
                                 dict(n_masks=10, n_classes=2, feature_dim=0)])
def test_bad_parameters_refused(bad):
    with pytest.raises(ValueError):
        make_synthetic(seed=0, **bad)


# ----------------------------------------------------------------- determinism and notice


def test_same_seed_identical_files_other_seed_differs(tmp_path, made, monkeypatch):
    s, out, gt, df = made
    again = make_synthetic(N, C, seed=SEED, progress=False)
    write_synthetic(again, tmp_path / "a")
    assert _files(tmp_path / "a") == _files(out)
    # chunk size does not change the result
    monkeypatch.setattr(synth_mod, "CHUNK", 333)
    chunked = make_synthetic(N, C, seed=SEED, progress=False)
    assert chunked.predictions == s.predictions and chunked.gt == s.gt
    other = make_synthetic(N, C, seed=SEED + 1, progress=False)
    write_synthetic(other, tmp_path / "b")
    fa, fb = _files(out), _files(tmp_path / "b")
    assert all(fa[k] != fb[k] for k in ("gt.json", "predictions.json", "features.npy", "README.txt"))


def test_synthetic_notice(made):
    s, out, gt, df = made
    info = json.loads((out / "gt.json").read_text())["info"]
    assert info["description"].startswith("SYNTHETIC DATA")
    assert "crowdprop synth" in info["description"] and f"seed={SEED}" in info["description"]
    assert info["crowdprop_synth"] == {"seed": SEED, "masks": N, "classes": C, "image_size": 64,
                                       "feature_dim": 64, "pred_iou": True}
    readme = (out / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC DATA")
    assert f"crowdprop synth --masks {N} --classes {C} --seed {SEED}" in readme
    corr = np.corrcoef(df["score"], s.true_iou)[0, 1]
    assert f"score {corr:.3f}" in readme


# ----------------------------------------------------------------- writing and the command


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    s = make_synthetic(100, 2, seed=0, progress=False)
    calls = []

    def boom(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        Path(path).write_bytes(data)

    monkeypatch.setattr(synth_mod, "atomic_write_bytes", boom)
    with pytest.raises(OSError):
        write_synthetic(s, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_write_into_existing_empty_dir(tmp_path):
    (tmp_path / "out").mkdir()
    write_synthetic(make_synthetic(50, 2, seed=0, progress=False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(synth_mod.FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_refuses_non_empty(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_synthetic(make_synthetic(20, 2, seed=0, progress=False), tmp_path / "x")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep.txt"]


def test_cli_writes_a_loadable_set(tmp_path, capsys):
    rc = main(["synth", "--masks", "300", "--classes", "4", "--seed", "9", "--feature-dim", "8",
               "-o", str(tmp_path / "s")])
    assert rc == 0
    assert "300 synthetic predictions" in capsys.readouterr().out
    gt = load_ground_truth(tmp_path / "s" / "gt.json")
    df = load_predictions(tmp_path / "s" / "predictions.json", gt)
    lat = np.load(tmp_path / "s" / "latent.npz")
    np.testing.assert_array_equal(df["gt_iou"].to_numpy(), lat["true_iou"])
    assert np.load(tmp_path / "s" / "features.npy").shape == (300, 8)
    ref = make_synthetic(300, 4, seed=9, feature_dim=8, progress=False)
    assert json.loads((tmp_path / "s" / "predictions.json").read_text()) == ref.predictions


def test_cli_refuses_non_empty_dir(tmp_path, capsys):
    d = tmp_path / "busy"
    d.mkdir()
    (d / "notes.txt").write_text("do not touch")
    before = _files(d)
    rc = main(["synth", "--masks", "100", "--classes", "2", "-o", str(d)])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert str(d) in err and "not empty" in err
    assert _files(d) == before
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]


def test_cli_refuses_more_classes_than_masks(tmp_path, capsys):
    rc = main(["synth", "--masks", "3", "--classes", "5", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--classes" in err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------- geometry


def _brute(kind, cx, cy, a, b, th, verts, size):
    """Dense mask by testing every pixel centre against the shape."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    X, Y = xs - cx, ys - cy
    c, s = np.cos(th), np.sin(th)
    if kind == ELLIPSE:
        u = X * c + Y * s
        v = -X * s + Y * c
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    p = verts * [a, b]
    px = cx + c * p[:, 0] - s * p[:, 1]
    py = cy + s * p[:, 0] + c * p[:, 1]
    inside = np.ones((size, size), bool)
    for i in range(len(px)):
        j = (i + 1) % len(px)
        ex, ey = px[j] - px[i], py[j] - py[i]
        if abs(ex) < 1e-9 and abs(ey) < 1e-9:
            continue
        inside &= ex * (ys - py[i]) - ey * (xs - px[i]) >= -1e-9
    return inside


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from([ELLIPSE, RECTANGLE, POLYGON]),
       size=st.sampled_from([16, 33, 64]))
def test_intervals_match_pixel_centre_test(seed, kind, size):
    rng = np.random.default_rng(seed)
    n = 6
    kinds = np.full(n, kind)
    cx, cy = rng.uniform(-5, size + 5, n), rng.uniform(-5, size + 5, n)
    a, b = rng.uniform(1, size / 2, n), rng.uniform(1, size / 2, n)
    th = rng.uniform(-4, 4, n)
    verts = _unit_vertices(kinds, rng)
    top, bot = _shape_intervals(kinds, cx, cy, a, b, th, verts, size, size)
    dense = [_brute(kind, cx[i], cy[i], a[i], b[i], th[i], verts[i], size) for i in range(n)]
    ys = np.arange(size)[:, None]
    for i in range(n):
        mine = (ys >= top[i][None, :]) & (ys < bot[i][None, :])
        # pixel centres exactly on an edge may go either way
        assert (mine != dense[i]).sum() <= 2
    # RLE encoding, area, box and IoU of the intervals agree with pycocotools
    counts = intervals_to_rle(top, bot, size)
    for i in range(n):
        np.testing.assert_array_equal(rle.decode(counts[i], size, size), (ys >= top[i]) & (ys < bot[i]))
    area, box = interval_area_bbox(top, bot)
    np.testing.assert_array_equal(area, rle.area(counts, [size] * n, [size] * n))
    nonempty = area > 0
    np.testing.assert_array_equal(box[nonempty], rle.bbox(counts, [size] * n, [size] * n)[nonempty])
    j = np.roll(np.arange(n), 1)
    mine = interval_iou(top, bot, top[j], bot[j])
    objs = [rle.to_coco(c, size, size) for c in counts]
    for i in range(n):
        if area[i] > 0 and area[j[i]] > 0:
            ref = cocomask.iou([objs[i]], [objs[j[i]]], [0])[0][0]
            assert mine[i] == ref


def test_streamed_set_is_the_same_files(tmp_path, made, monkeypatch):
    """What `crowdprop synth` writes a chunk at a time (no records held) is make + write, byte
    for byte, whatever the chunk; latent.npz holds the same arrays (zip timestamps differ)."""
    s, out, gt, df = made
    monkeypatch.setattr(synth_mod, "STREAM_CHUNK", 97)
    n = synth_mod.stream_synthetic(N, C, tmp_path / "streamed", seed=SEED, progress=False)
    assert n == {"predictions": N, "instances": len(s.gt["annotations"]), "images": len(s.gt["images"])}
    fa, fb = _files(out), _files(tmp_path / "streamed")
    assert sorted(fb) == sorted(synth_mod.FILES)
    assert all(fa[k] == fb[k] for k in ("gt.json", "predictions.json", "features.npy", "README.txt"))
    a, b = np.load(out / "latent.npz"), np.load(tmp_path / "streamed" / "latent.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_streamed_write_failing_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(synth_mod.np, "savez", boom)
    with pytest.raises(OSError):
        synth_mod.stream_synthetic(200, 3, tmp_path / "out", seed=1, progress=False)
    assert list(tmp_path.iterdir()) == []
