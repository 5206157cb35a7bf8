"""A verifier that learns from every answer: a calibrated model of "this mask is correct".

After each round a gradient-boosted classifier (scikit-learn) is fitted on every
non-gold answer so far and predicts, for every mask, the probability that a worker
would say "correct"; worker error is then removed with the crowd's gold-measured
sensitivity and specificity, which gives the probability that the mask *is* correct.

Inputs per mask (:func:`verifier_features`)
    detector score, predicted IoU (NaN when absent), the policy's predicted quality,
    log area, box aspect, area share of the image; the smoothed answer rate of the
    mask's class and of its nearest tree ancestors holding at least 3, 10 and 30
    answers, with those counts (the tree context: the clustering features seen
    through the tree). Training rows get their context by cross-fitting
    (:func:`training_features`): from the answers of the other folds only. Leaving just
    the row's own answer out would leak it (within a group, the leave-one-out rate is
    lower exactly when the row said yes) and the model would learn that backwards.

Uses (:mod:`crowdprop.policy.controller` and the round loop)
    * rank candidate clusters and apply K_pa on learned quality instead of raw scores;
    * settle masks one by one inside clusters the tree leaves to per-mask checks:
      accept when the calibrated probability clears the target (plus a margin the
      audits can raise), reject when it is under ``verifier_reject``;
    * choose questions actively (:func:`active_questions`): the most uncertain half of
      the unsettled masks, clustered with k-means into as many groups as questions,
      the mask nearest each centre; plus a share of uniform random questions whose
      answers check the model's calibration.

Pure: arrays in, arrays out; randomness only through the seed / generator passed in.
"""
from __future__ import annotations

import logging

import numpy as np
from threadpoolctl import threadpool_limits

from ..tree import Forest

log = logging.getLogger(__name__)

LEVELS = (3, 10, 30)
"""Answer counts of the nearest ancestors whose rates are features."""
MAX_WALK = 64


def _leaf_of(forest: Forest) -> np.ndarray:
    """Per mask row, the leaf node holding it."""
    n = len(forest.order)
    leaves = np.flatnonzero(forest.left < 0)
    d = np.zeros(n + 1, dtype=np.int64)
    np.add.at(d, forest.start[leaves], leaves + 1)
    np.add.at(d, forest.end[leaves], -(leaves + 1))
    by_pos = np.cumsum(d)[:n] - 1
    out = np.empty(n, dtype=np.int64)
    out[forest.order] = by_pos
    return out


def tree_context(forest: Forest, yes_p: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For ``rows``, the smoothed answer rate and log count of the nearest ancestor with
    at least 3, 10 and 30 answered members: ``(len(rows), 6)``."""
    has = ~np.isnan(yes_p)
    v = np.where(has, yes_p, 0.0)[forest.order]
    hc = has[forest.order]
    cn = np.concatenate([[0], np.cumsum(hc)])
    cy = np.concatenate([[0.0], np.cumsum(v)])
    n_node = cn[forest.end] - cn[forest.start]
    y_node = cy[forest.end] - cy[forest.start]
    cur = _leaf_of(forest)[rows]
    out = np.full((len(rows), 2 * len(LEVELS)), np.nan)
    found = np.zeros((len(rows), len(LEVELS)), dtype=bool)
    for _ in range(MAX_WALK):
        nn = n_node[cur]
        yy = y_node[cur]
        for j, lev in enumerate(LEVELS):
            hit = ~found[:, j] & (nn >= lev)
            if hit.any():
                out[hit, 2 * j] = (yy[hit] + 1.0) / (nn[hit] + 2.0)
                out[hit, 2 * j + 1] = np.log1p(nn[hit])
                found[hit, j] = True
        par = forest.parent[cur]
        if found.all() or (par < 0).all():
            break
        cur = np.where(par >= 0, par, cur)
    return out


def class_rate(category: np.ndarray, yes_p: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Smoothed answer rate of each row's class."""
    has = ~np.isnan(yes_p)
    cats, inv = np.unique(category, return_inverse=True)
    n_c = np.bincount(inv, weights=has.astype(np.float64), minlength=len(cats))
    y_c = np.bincount(inv, weights=np.where(has, yes_p, 0.0), minlength=len(cats))
    return (y_c[inv[rows]] + 1.0) / (n_c[inv[rows]] + 2.0)


def verifier_features(masks, forest: Forest, quality: np.ndarray, yes_p: np.ndarray,
                      rows: np.ndarray) -> np.ndarray:
    """The model's input matrix for mask ``rows``: ``(len(rows), 13)``."""
    score = masks["score"].to_numpy(np.float64)[rows]
    piou = masks["pred_iou"].to_numpy(np.float64)[rows]
    area = masks["area"].to_numpy(np.float64)[rows]
    w = np.maximum(masks["bbox_w"].to_numpy(np.float64)[rows], 1e-3)
    h = np.maximum(masks["bbox_h"].to_numpy(np.float64)[rows], 1e-3)
    img = np.maximum(masks["height"].to_numpy(np.float64)[rows] * masks["width"].to_numpy(np.float64)[rows], 1.0)
    cat = masks["category_id"].to_numpy(np.int64)
    base = np.column_stack([score, piou, quality[rows], np.log1p(area), np.log(w / h), area / img,
                            class_rate(cat, yes_p, rows)])
    return np.column_stack([base, tree_context(forest, yes_p, rows)])


def training_features(masks, forest: Forest, quality: np.ndarray, yes_p: np.ndarray, rows: np.ndarray,
                      rng: np.random.Generator, folds: int = 5) -> np.ndarray:
    """:func:`verifier_features` of answered ``rows`` by cross-fitting: each fold's context comes
    from the answers of the other folds, so no row's features depend on its own answer."""
    fold = rng.permutation(len(rows)) % folds
    out = None
    for f in range(folds):
        sel = rows[fold == f]
        if len(sel) == 0:
            continue
        masked = yes_p.copy()
        masked[sel] = np.nan
        X = verifier_features(masks, forest, quality, masked, sel)
        if out is None:
            out = np.empty((len(rows), X.shape[1]))
        out[fold == f] = X
    return out if out is not None else np.empty((0, 0))


class Verifier:
    """Gradient-boosted P(worker says correct | mask), corrected for worker error.

    scikit-learn style: ``__init__`` stores parameters, :meth:`fit` learns, fitted
    state in attributes ending in ``_``.
    """

    def __init__(self, *, min_answers: int = 100, random_state: int = 0, max_iter: int = 60, folds: int = 3):
        self.min_answers = min_answers
        self.folds = folds
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, yes: np.ndarray, weight: np.ndarray | None = None) -> "Verifier":
        """``yes``: per training mask, the share of its answers saying correct (soft label)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        yes = np.asarray(yes, dtype=np.float64)
        w = np.ones(len(yes)) if weight is None else np.asarray(weight, dtype=np.float64)
        self.fitted_ = False
        if len(yes) < self.min_answers or yes.min() == yes.max():
            return self
        # Columns with no value at all (e.g. no predicted IoU, no ancestor with 30 answers yet)
        # carry nothing and cannot be binned.
        self.columns_ = np.flatnonzero(~np.all(np.isnan(X), axis=0))
        X = X[:, self.columns_]
        # Labels for the trees: the majority of each mask's answers (a tie counts as yes). Sample
        # weights would send scikit-learn's binning down a weighted-percentile path several times
        # slower than the fit itself; the isotonic map below is fitted on the soft labels.
        Xd = X
        yd = (yes >= 0.5).astype(np.int64)
        if yd.min() == yd.max():
            return self

        def model():
            return HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=0.06, max_leaf_nodes=15, min_samples_leaf=20,
                l2_regularization=1.0, random_state=self.random_state, early_stopping=False)

        def fit(rows):
            return model().fit(Xd[rows], yd[rows], sample_weight=None if weight is None else w[rows])

        # One thread: the model is small, and OpenMP's busy-waiting threads crawl on a shared machine.
        with threadpool_limits(1):
            # Boosted trees are over-confident on what they were fitted to: map their scores
            # through an isotonic fit of out-of-fold predictions against the answers.
            from sklearn.isotonic import IsotonicRegression

            fold = np.random.default_rng(self.random_state).permutation(len(yes)) % self.folds
            oof = np.empty(len(yes))
            for f in range(self.folds):
                oof[fold == f] = fit(np.flatnonzero(fold != f)).predict_proba(X[fold == f])[:, 1]
            self.calibration_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                oof, yes, sample_weight=w)
            self.model_ = fit(np.arange(len(yes)))
        self.n_train_ = int(len(yes))
        self.fitted_ = True
        return self

    def predict_yes(self, X: np.ndarray) -> np.ndarray:
        with threadpool_limits(1):
            return self.calibration_.predict(self.model_.predict_proba(X[:, self.columns_])[:, 1])

    @staticmethod
    def correct(p_yes: np.ndarray, sens: float, spec: float) -> np.ndarray:
        """P(correct) from P(yes): ``(p_yes - (1 - spec)) / (sens + spec - 1)``, clipped."""
        j = max(sens + spec - 1.0, 0.05)
        return np.clip((np.asarray(p_yes) - (1.0 - spec)) / j, 0.0, 1.0)


MAX_KMEANS = 2000
"""Active questions beyond this many are the most uncertain masks, without k-means."""


def active_questions(X: np.ndarray, p: np.ndarray, n_active: int, n_random: int,
                     rng: np.random.Generator, *, max_fit: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``X``/``p``) to ask: ``n_active`` chosen for uncertainty and
    diversity, ``n_random`` uniform at random among the rest.

    The most uncertain half (largest ``p (1 - p)``) is clustered with k-means into
    ``n_active`` groups in the standardized feature space; the member nearest each
    centre is asked. Beyond :data:`MAX_KMEANS` questions, the ``n_active`` most uncertain.
    """
    m = len(p)
    n_active = int(min(n_active, m))
    chosen = np.zeros(0, dtype=np.int64)
    if n_active > 0:
        unc = p * (1.0 - p)
        half = np.argsort(-unc, kind="stable")[: max(n_active, (m + 1) // 2)]
        if len(half) <= n_active:
            chosen = np.sort(half)
        elif n_active > MAX_KMEANS:
            chosen = np.sort(half[:n_active])  # the most uncertain: k-means over so many groups costs too much
        else:
            from sklearn.cluster import MiniBatchKMeans

            Z = np.nan_to_num(X[half], nan=-1.0)
            mu, sd = Z.mean(axis=0), Z.std(axis=0)
            Z = (Z - mu) / np.where(sd > 0, sd, 1.0)
            fit_rows = Z if len(Z) <= max_fit else Z[rng.choice(len(Z), max_fit, replace=False)]
            km = MiniBatchKMeans(n_clusters=n_active, random_state=int(rng.integers(2**31 - 1)), n_init=1,
                                 batch_size=2048, max_iter=50).fit(fit_rows)
            # nearest member of the uncertain half to each centre, without repeats
            d = ((Z[:, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(-1) if len(Z) * n_active <= 2e6 \
                else None
            picks = []
            taken = np.zeros(len(Z), dtype=bool)
            if d is not None:
                for c in range(n_active):
                    order = np.argsort(d[:, c], kind="stable")
                    j = order[~taken[order]][0]
                    taken[j] = True
                    picks.append(j)
            else:
                lab = km.predict(Z)
                for c in range(n_active):
                    members = np.flatnonzero((lab == c) & ~taken)
                    if len(members) == 0:
                        continue
                    dc = ((Z[members] - km.cluster_centers_[c]) ** 2).sum(-1)
                    j = members[int(np.argmin(dc))]
                    taken[j] = True
                    picks.append(j)
            chosen = np.sort(half[np.array(picks, dtype=np.int64)])
    rest = np.setdiff1d(np.arange(m), chosen)
    n_random = int(min(n_random, len(rest)))
    rnd = np.sort(rng.choice(rest, n_random, replace=False)) if n_random > 0 else np.zeros(0, dtype=np.int64)
    return chosen.astype(np.int64), rnd.astype(np.int64)
