"""The verifier (crowdprop.policy.verifier): calibration, tree context, active selection."""
import numpy as np
import pandas as pd

from crowdprop.policy.verifier import Verifier, active_questions, tree_context
from crowdprop.tree import Forest


def _data(rng, n):
    X = rng.normal(size=(n, 4))
    logit = 2.2 * X[:, 0] - 1.5 * X[:, 1] + 0.8 * X[:, 2] * X[:, 0] + 1.0
    p = 1 / (1 + np.exp(-logit))
    truth = (rng.random(n) < p).astype(int)
    return X, p, truth


def test_verifier_is_calibrated_on_held_out_noisy_answers():
    """Fitted on single 95 %-accurate answers, its corrected P(correct) matches the true rate
    of correct masks in held-out bins within 0.05 (expected calibration error under 0.03)."""
    rng = np.random.default_rng(0)
    X, p, truth = _data(rng, 24_000)
    sens = spec = 0.95
    ans = np.where(truth == 1, rng.random(len(truth)) < sens, rng.random(len(truth)) < 1 - spec).astype(float)
    train, test = np.arange(8000), np.arange(8000, 24_000)
    v = Verifier(random_state=0).fit(X[train], ans[train])
    assert v.fitted_
    q = Verifier.correct(v.predict_yes(X[test]), sens, spec)
    bins = np.clip((q * 10).astype(int), 0, 9)
    ece = 0.0
    for b in range(10):
        sel = bins == b
        if sel.sum() < 200:
            continue
        gap = abs(q[sel].mean() - truth[test][sel].mean())
        assert gap < 0.05, (b, gap)
        ece += sel.mean() * gap
    assert ece < 0.03
    # and it ranks: masks it is sure about are right far more often
    assert truth[test][q > 0.9].mean() > 0.9 > truth[test][q < 0.5].mean()


def test_verifier_refuses_to_fit_on_too_little_or_one_sided_data():
    X = np.zeros((50, 3))
    assert not Verifier(min_answers=100).fit(X, np.ones(50)).fitted_
    assert not Verifier(min_answers=10).fit(X, np.ones(50)).fitted_


def _chain_forest():
    """Two masks per leaf pair: ((0,1),(2,3)) as one tree over 4 masks."""
    order = np.array([0, 1, 2, 3])
    # nodes: leaves 0..3, 4=(0,1), 5=(2,3), 6=(4,5)
    left = np.array([-1, -1, -1, -1, 0, 2, 4])
    right = np.array([-1, -1, -1, -1, 1, 3, 5])
    parent = np.array([4, 4, 5, 5, 6, 6, -1])
    start = np.array([0, 1, 2, 3, 0, 2, 0])
    end = np.array([1, 2, 3, 4, 2, 4, 4])
    return Forest(order=order, category=np.zeros(7, np.int64), parent=parent, left=left, right=right,
                  start=start, end=end, height=np.zeros(7), depth=np.array([2, 2, 2, 2, 1, 1, 0], np.int32))


def test_tree_context_reads_the_nearest_ancestor_with_enough_answers():
    f = _chain_forest()
    yes_p = np.array([1.0, 1.0, 0.0, np.nan])
    ctx = tree_context(f, yes_p, np.arange(4))
    # level 3: only the root holds 3 answers (2 yes) -> (2 + 1) / (3 + 2) for every mask
    assert np.allclose(ctx[:, 0], 3 / 5)
    assert np.allclose(ctx[:, 1], np.log1p(3))
    assert np.isnan(ctx[:, 2]).all()  # no ancestor with 10 answers


def test_training_features_never_see_the_row_own_answer():
    """Cross-fitting: flipping a training row's answer leaves its own features unchanged
    (a leave-one-out rate would move, and leak the label backwards)."""
    f = _chain_forest()
    masks = pd.DataFrame({"score": [0.9, 0.8, 0.7, 0.6], "pred_iou": np.nan, "area": 100.0, "bbox_w": 10.0,
                          "bbox_h": 10.0, "height": 100, "width": 100, "category_id": 1})
    q = masks["score"].to_numpy()
    rows = np.array([0, 1, 2])
    a = np.array([1.0, 1.0, 0.0, np.nan])
    b = a.copy()
    b[0] = 0.0
    from crowdprop.policy.verifier import training_features

    xa = training_features(masks, f, q, a, rows, np.random.default_rng(0), folds=3)
    xb = training_features(masks, f, q, b, rows, np.random.default_rng(0), folds=3)
    assert np.allclose(xa[0], xb[0], equal_nan=True)
    assert not np.allclose(xa[1:], xb[1:], equal_nan=True)  # the others do see it


def test_active_questions_pick_uncertain_centroids_and_random_rest():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    X = np.vstack([c + rng.normal(scale=0.3, size=(100, 2)) for c in centres])
    p = np.full(300, 0.98)  # confident ...
    unc = np.concatenate([np.arange(0, 100, 2), np.arange(100, 200, 2), np.arange(200, 300, 2)])
    p[unc] = 0.5  # ... except every other mask of each blob
    act, rnd = active_questions(X, p, 3, 5, np.random.default_rng(1))
    assert len(act) == 3 and len(rnd) == 5
    assert set(act.tolist()) <= set(unc.tolist())
    assert sorted(a // 100 for a in act) == [0, 1, 2]  # one per blob
    for a in act:  # each the uncertain mask nearest its blob's centre of uncertain masks
        blob = unc[unc // 100 == a // 100]
        c = X[blob].mean(0)
        d = ((X[blob] - c) ** 2).sum(1)
        assert ((X[a] - c) ** 2).sum() <= np.sort(d)[3]
    assert not set(rnd.tolist()) & set(act.tolist())


def test_active_questions_beyond_the_kmeans_limit_are_the_most_uncertain(monkeypatch):
    from crowdprop.policy import verifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    p = rng.random(40)
    top = np.sort(np.argsort(-(p * (1 - p)), kind="stable")[:5])
    monkeypatch.setattr(verifier, "MAX_KMEANS", 3)
    chosen, rnd = verifier.active_questions(X, p, 5, 0, np.random.default_rng(1))
    assert np.array_equal(chosen, top) and len(rnd) == 0
    monkeypatch.setattr(verifier, "MAX_KMEANS", 2000)
    chosen, _ = verifier.active_questions(X, p, 5, 0, np.random.default_rng(1))
    assert len(chosen) == 5 and not np.array_equal(chosen, top)  # k-means picks for diversity too
