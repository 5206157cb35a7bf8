"""Which units to send to people (pure: arrays and a ``numpy.random.Generator`` in, indices out).

``active`` (Qiao et al., WACV 2023): take the most uncertain half of the candidates, cluster
their embeddings with k-means into ``b`` clusters, and pick the candidate nearest each centre:
uncertain and diverse. Baselines: ``uncertainty`` (the ``b`` most uncertain), ``random``
(uniform), and ``keyframe`` (whole frames spread evenly over the clip, see :func:`keyframes`).
"""
from __future__ import annotations

import numpy as np

METHODS = ("active", "uncertainty", "random", "keyframe")


def select(uncertainty: np.ndarray, embeddings: np.ndarray, b: int, rng: np.random.Generator, *,
           method: str = "active", candidates: np.ndarray | None = None) -> np.ndarray:
    """Indices (into the unit arrays) of at most ``b`` units to ask, in a deterministic order.

    Parameters
    ----------
    uncertainty : (n,) float
    embeddings : (n, d) float
    b : int
        Units to pick (this round's budget).
    rng : numpy.random.Generator
    method : ``active`` | ``uncertainty`` | ``random``
    candidates : (n,) bool, optional
        Units that may be picked (default: all).
    """
    n = len(uncertainty)
    cand = np.flatnonzero(np.ones(n, bool) if candidates is None else candidates)
    b = int(min(b, len(cand)))
    if b <= 0:
        return np.zeros(0, np.int64)
    if method == "random":
        return np.sort(rng.choice(cand, size=b, replace=False)).astype(np.int64)
    # most uncertain first; ties broken by index so the order is reproducible
    order = cand[np.lexsort((cand, -uncertainty[cand]))]
    if method == "uncertainty":
        return np.sort(order[:b]).astype(np.int64)
    if method != "active":
        raise ValueError(f"method must be one of {METHODS[:3]}, got {method!r}")
    half = order[:max(b, (len(order) + 1) // 2)]
    if b == len(half):
        return np.sort(half).astype(np.int64)
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings[half], np.float64)
    km = KMeans(n_clusters=b, n_init=3, random_state=int(rng.integers(2 ** 31 - 1))).fit(x)
    d = np.empty((len(x), b))  # (len(half), b), a block of rows at a time (not (len(half), b, d) at once)
    rows = max(1, 2 ** 22 // max(1, b * x.shape[1]))
    for i in range(0, len(x), rows):
        d[i:i + rows] = ((x[i:i + rows, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(-1)
    chosen: list[int] = []
    taken = np.zeros(len(half), bool)
    for j in range(b):  # nearest member to each centre, each unit at most once
        for i in np.argsort(d[:, j], kind="stable"):
            if not taken[i]:
                taken[i] = True
                chosen.append(int(half[i]))
                break
    return np.sort(np.array(chosen, np.int64))


def keyframes(n_frames: int, labeled: np.ndarray, b: int) -> np.ndarray:
    """``b`` frames (not yet labeled) each as far as possible from the labeled ones, greedily:
    the middle frame first, then the midpoints of the largest gaps."""
    lab = set(int(i) for i in np.flatnonzero(labeled))
    out = []
    for _ in range(int(b)):
        best, best_d = None, -1
        for f in range(n_frames):
            if f in lab:
                continue
            d = min((abs(f - g) for g in lab), default=None)
            d = d if d is not None else n_frames - abs(2 * f - (n_frames - 1))  # none yet: the middle
            if d > best_d:
                best, best_d = f, d
        if best is None:
            break
        lab.add(best)
        out.append(best)
    return np.sort(np.array(out, np.int64))
