"""Risk-aware cluster decisions for a precision target (the ``target`` policy).

Glossary
--------
phi
    Probability that a worker says "correct" about a random unanswered member of a
    cluster. Workers err, so ``phi = sens * theta + (1 - spec) * (1 - theta)`` where
    ``theta`` is the cluster's true precision and ``sens``/``spec`` are the crowd's
    sensitivity and specificity measured on gold questions; ``J = sens + spec - 1``.
prior
    ``phi ~ Beta(a0, b0)``, learned by empirical Bayes from the clusters already
    decided in the same class and depth band (method of moments), so the clusters
    that are tested are shrunk towards what such clusters turned out to be. This is
    what stops a lucky sample of a large mixed cluster from looking pure.
expected shortfall
    ``loss_accept = size * E[(t - theta)+]``: the expected number of correct masks
    the cluster falls short of a cluster exactly at the target ``t``; accepting is
    allowed once it is at most ``tol(size) = eps * min(size, size_cap)`` masks: a
    per-mask shortfall ``eps`` for clusters up to ``size_cap`` masks, a fixed number of
    masks beyond, so the evidence needed keeps growing with size. ``loss_reject = size * E[(theta - r)+]``
    against the reject bar ``r`` (tolerated :data:`REJECT_TOLERANCE` times more: a wrong
    reject costs recall, not the promised precision). Both grow with the cluster's size, so a cluster of
    100,000 masks needs far more evidence than one of 20 (no cluster of 100,000 masks
    is accepted on 15 answers).
decision
    accept / reject when its loss is under ``tol``; split early when the posterior is
    confidently between the bars (the cluster is mixed) or gives the cluster less than
    :data:`HOPELESS` probability of reaching the target; else ask another batch, up to
    ``k_cap(size)`` answers, then split.

Pure functions over arrays; nothing here touches disk or network.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..schema import Decision

ACCEPT, REJECT, SPLIT, WAIT = (Decision.ACCEPT.value, Decision.REJECT.value, Decision.SPLIT.value,
                               Decision.WAIT.value)

REJECT_TOLERANCE = 5.0
"""A wrong reject costs recall, a wrong accept the precision the target promises: rejecting
tolerates this many times the expected shortfall that accepting does."""
HOPELESS = 0.2
"""A cluster whose answers give it less than this probability of being at the target is split
at once (asking more would mostly buy answers on a cluster that will be split anyway; the
set-level rule of :func:`crowdprop.policy.target.set_accept` may still accept it)."""
DEPTH_BANDS = np.array([0, 1, 2, 3, 5, 9, 17, 33])
"""Lower edges of the depth bands that share an empirical-Bayes prior."""


def depth_band(depth) -> np.ndarray:
    return np.searchsorted(DEPTH_BANDS, np.asarray(depth), side="right") - 1


def beta_shortfall(t, a, b) -> np.ndarray:
    """``E[(t - X)+]`` for ``X ~ Beta(a, b)`` (closed form)."""
    t = np.asarray(t, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return t * stats.beta.cdf(t, a, b) - a / (a + b) * stats.beta.cdf(t, a + 1.0, b)


def beta_excess(t, a, b) -> np.ndarray:
    """``E[(X - t)+]`` for ``X ~ Beta(a, b)``."""
    return a / (a + b) - np.asarray(t, dtype=np.float64) + beta_shortfall(t, a, b)


def moment_prior(yes: np.ndarray, n: np.ndarray, *, max_strength: float = 20.0,
                 min_clusters: int = 5) -> tuple[float, float] | None:
    """Method-of-moments Beta prior from decided clusters' (yes, n); None if too few.

    The spread of the observed rates minus their binomial noise is the spread of the
    clusters' true rates; the prior's strength ``a0 + b0`` is capped at ``max_strength``
    so that a cluster's own answers always dominate after a few batches.
    """
    ok = n > 0
    if ok.sum() < min_clusters:
        return None
    r = yes[ok] / n[ok]
    m = float(np.clip(r.mean(), 0.02, 0.98))
    var = float(r.var())
    noise = float(np.mean(m * (1 - m) / n[ok]))
    between = max(var - noise, 1e-4)
    strength = float(np.clip(m * (1 - m) / between - 1.0, 1.0, max_strength))
    return m * strength, (1 - m) * strength


def eb_priors(history: pd.DataFrame, groups: pd.DataFrame, *, max_strength: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate, the Beta prior over ``phi`` from the clusters decided before it.

    ``history``: columns ``category_id, band, yes, n_labeled`` of clusters decided in
    earlier rounds by their answers (free splits excluded). ``groups``: ``category_id,
    band`` of the candidates. The prior of (class, band) when it has enough clusters,
    else of the class, else of every class, else the uniform Beta(1, 1).
    """
    c = len(groups)
    a0 = np.ones(c)
    b0 = np.ones(c)
    if history is None or len(history) == 0 or c == 0:
        return a0, b0
    yes = history["yes"].to_numpy(np.float64)
    n = history["n_labeled"].to_numpy(np.float64)
    glob = moment_prior(yes, n, max_strength=max_strength)
    by_class: dict[int, tuple[float, float] | None] = {}
    by_band: dict[tuple[int, int], tuple[float, float] | None] = {}
    for (cat, band), g in history.groupby(["category_id", "band"], sort=False):
        by_band[(int(cat), int(band))] = moment_prior(g["yes"].to_numpy(np.float64), g["n_labeled"].to_numpy(np.float64),
                                                      max_strength=max_strength)
    for cat, g in history.groupby("category_id", sort=False):
        by_class[int(cat)] = moment_prior(g["yes"].to_numpy(np.float64), g["n_labeled"].to_numpy(np.float64),
                                          max_strength=max_strength)
    cats = groups["category_id"].to_numpy(np.int64)
    bands = groups["band"].to_numpy(np.int64)
    for i in range(c):
        p = by_band.get((int(cats[i]), int(bands[i]))) or by_class.get(int(cats[i])) or glob
        if p is not None:
            a0[i], b0[i] = p
    return a0, b0


def noise_map(target: float, sens: float, spec: float) -> tuple[float, float]:
    """A precision ``target`` on the yes-rate scale, and Youden's J (>= 0.05)."""
    j = max(sens + spec - 1.0, 0.05)
    return target * sens + (1.0 - target) * (1.0 - spec), j


def tolerance(size, eps: float, size_cap: float) -> np.ndarray:
    """Masks of expected shortfall a verdict on a cluster of ``size`` may carry."""
    return eps * np.minimum(np.asarray(size, dtype=np.float64), size_cap)


def k_cap(size, k: int) -> np.ndarray:
    """Most answers a cluster gets before it is split: ``k`` per doubling of its size over ``k``."""
    size = np.asarray(size, dtype=np.float64)
    doublings = np.ceil(np.log2(np.maximum(size / max(k, 1), 1.0))) + 1.0
    return np.minimum(size, k * doublings).astype(np.int64)


def risk_decision(yes, n, size, a0, b0, *, target: float, reject: float, sens: float, spec: float,
                  tol: float, k: int, min_answers: int, confidence: float, size_cap: float = 2000.0) -> np.ndarray:
    """Decision value per cluster: accept / reject / split / wait (ask another batch).

    ``yes``/``n``: answers on the cluster's unanswered-member sample (``yes`` may be
    fractional); ``size``: masks the verdict would settle; ``a0, b0``: prior over phi.
    """
    yes = np.asarray(yes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    a = np.asarray(a0, dtype=np.float64) + yes
    b = np.asarray(b0, dtype=np.float64) + (n - yes)
    t_phi, j = noise_map(target, sens, spec)
    r_phi, _ = noise_map(reject, sens, spec)
    loss_acc = size * beta_shortfall(t_phi, a, b) / j
    loss_rej = size * beta_excess(r_phi, a, b) / j
    p_below = stats.beta.cdf(t_phi, a, b)
    p_above_rej = stats.beta.sf(r_phi, a, b)
    allowed = tolerance(size, tol, size_cap)
    out = np.full(yes.shape, WAIT, dtype=object)
    cap = k_cap(size, k)
    ready = n >= np.minimum(min_answers, size)
    out[ready & (n >= cap)] = SPLIT
    mixed = ready & (p_below >= confidence) & (p_above_rej >= confidence)
    out[mixed] = SPLIT
    out[ready & (p_below >= 1.0 - HOPELESS) & (p_above_rej >= confidence)] = SPLIT
    out[ready & (loss_rej <= REJECT_TOLERANCE * allowed)] = REJECT
    out[ready & (loss_acc <= allowed)] = ACCEPT
    return out


def more_answers(yes, n, size, a0, b0, *, target: float, sens: float, spec: float, tol: float, k: int,
                 batch: int, size_cap: float = 2000.0) -> np.ndarray:
    """How many more answers to ask about each cluster this round.

    A cluster not asked yet gets ``min(k, size)``. One still waiting gets the answers it
    would need to be accepted if every one of them said "correct" (the all-yes posterior
    ``Beta(a + m, b)`` first brings the shortfall under ``tol``), at least ``batch`` and
    at most what :func:`k_cap` leaves: large pure clusters are settled in one more round
    instead of many small ones.
    """
    yes = np.asarray(yes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    a = np.asarray(a0, dtype=np.float64) + yes
    b = np.asarray(b0, dtype=np.float64) + (n - yes)
    left = np.maximum(k_cap(size, k) - n, 0).astype(np.int64)
    t_phi, j = noise_map(target, sens, spec)
    m = np.zeros(size.shape)
    need = left.copy()
    todo = left > 0
    for _ in range(16):  # m = 0, 5, 10, 15, 22, 33, ... until the all-yes shortfall clears tol
        ok = todo & (size * beta_shortfall(t_phi, a + m, b) / j <= tolerance(size, tol, size_cap))
        need[ok] = m[ok].astype(np.int64)
        todo &= ~ok
        if not todo.any():
            break
        m = np.where(todo, np.maximum(np.ceil(m * 1.5), m + 5), m)
    out = np.clip(need, batch, None)
    out = np.where(n <= 0, np.minimum(k, size), out)
    return np.minimum(out, left).astype(np.int64)
