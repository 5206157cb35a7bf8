"""crowdprop synth --generator mixed: same files as the modes generator, unlike structure.

The properties measured here are the ones that make this set a second opinion
on a verification policy: clusters that mix correct and wrong masks (purity and
explained variance well below the modes generator's on the same size), classes
from 40 % to 95 % correct, a band of masks around IoU 0.75, and a score that is
a weaker, class-biased signal than the modes generator's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from crowdprop.campaign.init import init_run
from crowdprop.cli import main
from crowdprop.features import clustering_embedding
from crowdprop.features.load import load_features
from crowdprop.masks import load_ground_truth, load_predictions
from crowdprop.replay import synth as synth_mod
from crowdprop.replay.synth import make_synthetic
from crowdprop.replay.synth_mixed import class_correct_share, make_mixed, write_mixed
from crowdprop.tree.build import build_forest

N, C, SEED = 2000, 6, 3


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    s = make_mixed(N, C, seed=SEED, progress=False)
    out = tmp_path_factory.mktemp("mixed") / "set"
    write_mixed(s, out)
    return s, out


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _col(s, key) -> np.ndarray:
    return np.array([r[key] for r in s.predictions])


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for the positives of ``y``."""
    ranks = np.argsort(np.argsort(score)) + 1.0
    n1 = y.sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


def _cut_purity(s, cut: int = 50) -> tuple[float, float, float]:
    """Cut crowdprop's own cluster trees (built as ``crowdprop init`` does) into the
    largest nodes of at most ``cut`` masks. Returns the size-weighted mean purity
    (share of the majority label), the same for whole classes (the purity of not
    clustering at all), and the share of the within-class variance of correctness
    that the clusters explain."""
    cat = _col(s, "category_id")
    quality = np.sqrt(_col(s, "score") * _col(s, "pred_iou"))
    emb = clustering_embedding(s.features, quality, quality_weight=1.0, pca_dims=64, rng=np.random.default_rng(0))
    forest = build_forest(cat, emb, rng=np.random.default_rng(1))
    size, parent = forest.size, forest.parent
    top = np.flatnonzero((size <= cut) & ((parent < 0) | (size[np.maximum(parent, 0)] > cut)))
    y = s.true_iou > 0.75
    label = np.full(len(y), -1)
    majority = 0
    for j, node in enumerate(top):
        m = forest.members(node)
        label[m] = j
        majority += max(y[m].sum(), len(m) - y[m].sum())
    assert (label >= 0).all()  # the cut is a partition
    cluster_mean = np.bincount(label, weights=y) / np.bincount(label)
    class_mean = np.bincount(cat, weights=y) / np.maximum(np.bincount(cat), 1)
    explained = 1 - ((y - cluster_mean[label]) ** 2).sum() / ((y - class_mean[cat]) ** 2).sum()
    return majority / len(y), float(np.maximum(class_mean, 1 - class_mean)[cat].mean()), float(explained)


# ----------------------------------------------------------------- determinism and files


def test_same_seed_identical_files_other_seed_differs(tmp_path, made, monkeypatch):
    s, out = made
    write_mixed(make_mixed(N, C, seed=SEED, progress=False), tmp_path / "a")
    assert _files(tmp_path / "a") == _files(out)
    monkeypatch.setattr(synth_mod, "CHUNK", 333)  # rendering chunk size does not change the result
    chunked = make_mixed(N, C, seed=SEED, progress=False)
    assert chunked.predictions == s.predictions and chunked.gt == s.gt
    write_mixed(make_mixed(N, C, seed=SEED + 1, progress=False), tmp_path / "b")
    fa, fb = _files(out), _files(tmp_path / "b")
    assert sorted(fa) == sorted(synth_mod.FILES)
    assert all(fa[k] != fb[k] for k in fa)


def test_files_load_with_truth_and_notice(made):
    s, out = made
    gt = load_ground_truth(out / "gt.json")
    df = load_predictions(out / "predictions.json", gt)
    assert df["mask_id"].tolist() == list(range(1, N + 1))
    np.testing.assert_array_equal(df["gt_iou"].to_numpy(), s.true_iou)  # crowdprop's matching agrees
    assert sorted(df["category_id"].unique()) == list(range(1, C + 1))
    np.testing.assert_array_equal(load_features(out / "features.npy", df), s.features)
    lat = np.load(out / "latent.npz")
    np.testing.assert_array_equal(lat["true_iou"], s.true_iou)
    np.testing.assert_array_equal(lat["p_correct"], s.p_correct)
    # the source instance is in the prediction's image and class
    ann = gt.annotations.set_index("id").loc[s.source_ann_id]
    assert (ann["image_id"].to_numpy() == df["image_id"].to_numpy()).all()
    assert (ann["category_id"].to_numpy() == df["category_id"].to_numpy()).all()
    info = json.loads((out / "gt.json").read_text())["info"]
    assert info["synthetic"] is True and info["crowdprop_synth"]["generator"] == "mixed"
    assert info["description"].startswith("SYNTHETIC DATA") and "--generator mixed" in info["description"]
    readme = (out / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC DATA")
    assert f"crowdprop synth --generator mixed --masks {N} --classes {C} --seed {SEED}" in readme
    assert f"score {np.corrcoef(df['score'], s.true_iou)[0, 1]:.3f}" in readme


def test_init_builds_a_run_directory(made, tmp_path):
    s, out = made
    rd = init_run(tmp_path / "run", predictions=out / "predictions.json", gt=out / "gt.json",
                  features=out / "features.npy", crowd={"kind": "simulated"}, seed=1, progress=False)
    masks = rd.masks.sort_values("mask_id")
    assert len(masks) == N
    np.testing.assert_array_equal(masks["gt_iou"].to_numpy(), s.true_iou)
    assert len(rd.forest.roots) == C
    assert rd.forest.size[rd.forest.roots].sum() == N
    np.testing.assert_array_equal(np.load(rd.path / "features.npy"), s.features)


# ----------------------------------------------------------------- structure unlike the modes generator


def test_class_difficulty_spans_a_wide_range():
    s = make_mixed(6000, 12, seed=5, progress=False)
    share = class_correct_share(s)
    assert share.min() < 0.5 and share.max() > 0.9
    # each class lands on its target share of correct masks (binomial error aside)
    n = np.bincount(_col(s, "category_id") - 1, minlength=12)
    tol = 4 * np.sqrt(s.class_rate * (1 - s.class_rate) / n) + 0.02
    assert (np.abs(share - s.class_rate) < tol).all()
    assert s.class_rate.min() >= 0.40 and s.class_rate.max() <= 0.95


@pytest.mark.parametrize("seed", [1, 2])
def test_clusters_are_impure_where_the_modes_generator_is_pure(seed):
    mixed_purity, mixed_base, mixed_explained = _cut_purity(make_mixed(N, C, seed=seed, progress=False))
    modes_purity, modes_base, modes_explained = _cut_purity(make_synthetic(N, C, seed=seed, progress=False))
    assert modes_purity > 0.82 and modes_explained > 0.45  # the contrast: tight, mostly pure modes
    assert mixed_purity < modes_purity
    # Raw purity also follows the classes' rates (a 95 %-correct class is 95 % pure unclustered),
    # so compare what clustering adds to knowing the class: the share of the class's minority
    # label that the cut removes, and the share of the variance of correctness it explains.
    mixed_gain = (mixed_purity - mixed_base) / (1 - mixed_base)
    modes_gain = (modes_purity - modes_base) / (1 - modes_base)
    assert mixed_gain < 0.45 and modes_gain > 0.5
    assert mixed_gain < 0.7 * modes_gain
    assert mixed_explained < 0.55 * modes_explained


def test_share_of_correct_masks_varies_within_classes_and_groups(made):
    s, out = made
    cat = _col(s, "category_id")
    spread = []  # 5-95 percentile range of the log-odds of being correct, per class of 100 masks or more
    for k in range(1, C + 1):
        if (cat == k).sum() >= 100:
            logit = np.log(s.p_correct[cat == k] / (1 - s.p_correct[cat == k]))
            spread.append(np.percentile(logit, 95) - np.percentile(logit, 5))
    assert len(spread) >= 4 and min(spread) > 1.5 and np.median(spread) > 3.0  # odds drift 4.5-fold to 20-fold
    # latent groups are mixed: most masks sit in groups whose minority label is 10 % or more,
    # where most masks of the modes generator sit in nearly pure modes
    def in_mixed_groups(group, y):
        size = np.bincount(group)
        share = np.bincount(group, weights=y) / np.maximum(size, 1)
        return size[np.minimum(share, 1 - share) >= 0.1].sum() / len(y)

    y = s.true_iou > 0.75
    ref = make_synthetic(N, C, seed=SEED, progress=False)
    assert in_mixed_groups(s.group, y) > 0.6
    assert in_mixed_groups(ref.mode, ref.true_iou > 0.75) < 0.5
    # the position explains part of correctness, not all: even P(correct | z) ranks imperfectly
    assert 0.65 < _auc(s.p_correct, y) < 0.9


@pytest.mark.parametrize("seed", [1, 2])
def test_score_is_a_weaker_signal_than_in_the_modes_generator(seed):
    s = make_mixed(4000, 20, seed=seed, progress=False)
    ref = make_synthetic(4000, 20, seed=seed, progress=False)
    corr = np.corrcoef(_col(s, "score"), s.true_iou)[0, 1]
    corr_ref = np.corrcoef(_col(ref, "score"), ref.true_iou)[0, 1]
    assert 0.1 < corr < corr_ref - 0.05
    assert 0.3 < np.corrcoef(_col(s, "pred_iou"), s.true_iou)[0, 1] < 0.8
    # class-biased: some class's mean score overstates its share of correct masks by 0.2 or more,
    # and classes differ in that bias by far more than sampling noise
    cat = _col(s, "category_id")
    gap = (np.bincount(cat - 1, weights=_col(s, "score")) / np.bincount(cat - 1)) - class_correct_share(s)
    assert gap.max() > 0.2 and gap.max() - gap.min() > 0.4
    # heavy tails: pred_iou errors have excess kurtosis (0 for Gaussian noise)
    err = _col(s, "pred_iou") - s.true_iou
    err = err - err.mean()
    assert (err ** 4).mean() / (err ** 2).mean() ** 2 - 3 > 1.0


def test_true_iou_bimodal_with_a_borderline_band(made):
    s, out = made
    iou = s.true_iou
    ref = make_synthetic(N, C, seed=SEED, progress=False).true_iou
    band = np.mean(np.abs(iou - 0.75) < 0.05)
    assert band > 0.15 and band > 1.5 * np.mean(np.abs(ref - 0.75) < 0.05)
    above = np.mean((iou > 0.75) & (iou < 0.80))
    below = np.mean((iou > 0.70) & (iou <= 0.75))
    assert above > 0.06 and below > 0.03  # both sides of the threshold (fewer wrong masks than right ones)
    hist = np.histogram(iou, bins=10, range=(0, 1))[0]
    assert hist[8] > hist[5] and hist[1] > hist[3]  # a mode of good masks and one of gross errors
    assert np.mean(iou < 0.3) > 0.05


def test_features_carry_part_of_the_signal(made):
    """A 25-nearest-neighbour vote on the features, fitted on half of each class, ranks the
    other half's masks better than chance but no better than P(correct | z) itself."""
    s, out = made
    y = s.true_iou > 0.75
    cat = _col(s, "category_id")
    rng = np.random.default_rng(0)
    votes, truth, oracle = [], [], []
    for k in range(1, C + 1):
        idx = rng.permutation(np.flatnonzero(cat == k))
        if len(idx) < 100:
            continue
        fit, held = idx[: len(idx) // 2], idx[len(idx) // 2:]
        knn = KNeighborsClassifier(25).fit(s.features[fit], y[fit])
        votes.append(knn.predict_proba(s.features[held])[:, list(knn.classes_).index(True)])
        truth.append(y[held])
        oracle.append(s.p_correct[held])
    # pooled over classes (class rates differ, so pooling also rewards telling classes apart: compare like with like)
    votes, truth, oracle = np.concatenate(votes), np.concatenate(truth), np.concatenate(oracle)
    auc_features, auc_oracle = _auc(votes + 1e-9 * rng.random(len(votes)), truth), _auc(oracle, truth)
    assert 0.62 < auc_features < auc_oracle


# ----------------------------------------------------------------- the command and a replay


def test_cli_generator_flag(tmp_path, capsys):
    rc = main(["synth", "--generator", "mixed", "--masks", "300", "--classes", "4", "--seed", "9",
               "--feature-dim", "8", "-o", str(tmp_path / "m")])
    assert rc == 0 and "300 synthetic predictions" in capsys.readouterr().out
    ref = make_mixed(300, 4, seed=9, feature_dim=8, progress=False)
    assert json.loads((tmp_path / "m" / "predictions.json").read_text()) == ref.predictions
    np.testing.assert_array_equal(np.load(tmp_path / "m" / "features.npy"), ref.features)
    # the default stays the modes generator
    assert main(["synth", "--masks", "300", "--classes", "4", "--seed", "9", "-o", str(tmp_path / "d")]) == 0
    info = json.loads((tmp_path / "d" / "gt.json").read_text())["info"]
    assert "generator" not in info["crowdprop_synth"] and "--generator" not in info["description"]


@pytest.mark.parametrize("bad", [dict(n_masks=3, n_classes=4), dict(n_masks=10, n_classes=2, image_size=8),
                                 dict(n_masks=10, n_classes=2, feature_dim=0)])
def test_bad_parameters_refused(bad):
    with pytest.raises(ValueError):
        make_mixed(seed=0, **bad)


def test_replay_on_a_mixed_set(tmp_path, capsys):
    d = tmp_path / "set"
    assert main(["synth", "--generator", "mixed", "--masks", str(N), "--classes", str(C), "--seed", "4",
                 "-o", str(d)]) == 0
    rc = main(["replay", "--predictions", str(d / "predictions.json"), "--gt", str(d / "gt.json"),
               "--features", str(d / "features.npy"), "--crowd", "simulated", "--seed", "1",
               "--run-dir", str(tmp_path / "run")])
    assert rc == 0
    total = json.loads((tmp_path / "run" / "report.json").read_text())["total"]
    assert total["accepted"] > 0
    assert 0 < total["true_precision"] < 1
    # the report's truth is the generator's truth over the masks the campaign accepted
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "acc.json")]) == 0
    ids = np.array([a["id"] for a in json.loads((tmp_path / "acc.json").read_text())["annotations"]])
    true_iou = np.load(d / "latent.npz")["true_iou"]
    assert len(ids) == total["accepted"]
    assert total["true_precision"] == pytest.approx(np.mean(true_iou[ids - 1] > 0.75))
