"""Cluster precision from yes/no labels: Beta posteriors and the decision rules.

Glossary
--------
yes, no : float arrays
    Aggregated labels of the sampled members of a cluster: ``yes = sum(p_i)``,
    ``no = sum(1 - p_i)`` where ``p_i`` is the probability that member ``i`` is
    correct (0/1 for a single answer; a Dawid-Skene posterior with redundancy).
posterior
    ``precision ~ Beta(prior_a + yes, prior_b + no)``.
paper rule
    Papadopoulos et al. (2021): with ``k`` sampled labels, accept when the
    fraction of yes is ``>= accept``, reject when ``<= reject``, else split.
sequential rule
    Bayesian stochastic curtailment of the paper rule: labels arrive in small
    batches; from the Beta posterior the yes-count the paper would have seen at
    ``k`` labels is beta-binomial; the cluster stops as soon as one of the
    paper's outcomes has predictive probability ``>= confidence`` (deterministic
    curtailment, where the outcome is already certain, is the special case 1).
    Same decisions as the paper rule in expectation, with fewer questions.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from ..schema import Decision

ACCEPT, REJECT, SPLIT, WAIT = (Decision.ACCEPT.value, Decision.REJECT.value, Decision.SPLIT.value,
                               Decision.WAIT.value)


def paper_decision(yes, n, *, accept: float, reject: float) -> np.ndarray:
    """The paper's rule on ``n`` labels of which ``yes`` (may be fractional) say correct.

    Returns an object array of :class:`Decision` values (``'accept'``, ``'reject'``, ``'split'``).
    """
    yes = np.asarray(yes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    frac = np.divide(yes, n, out=np.full_like(yes, np.nan), where=n > 0)
    out = np.full(frac.shape, SPLIT, dtype=object)
    out[frac >= accept - 1e-12] = ACCEPT
    out[frac <= reject + 1e-12] = REJECT
    return out


def outcome_probabilities(yes, n, *, k: int | np.ndarray, accept: float, reject: float,
                          prior_a: float = 1.0, prior_b: float = 1.0):
    """Predictive probability that the paper rule at ``k`` labels accepts / rejects.

    ``k`` may be an array (per cluster: ``min(k, cluster size)``).

    With ``n < k`` labels (``yes`` of them correct) the remaining ``k - n`` yes-count
    is Beta-binomial under the posterior. Returns ``(p_accept, p_reject)``, arrays.
    """
    yes = np.asarray(yes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k_ = np.broadcast_to(np.asarray(k, dtype=np.float64), yes.shape)
    rest = np.maximum(k_ - n, 0).astype(np.int64)
    a = prior_a + yes
    b = prior_b + (n - yes)
    # accept when (yes + Y) / k >= accept  <=>  Y >= ceil(accept * k - yes)
    need_acc = np.ceil(accept * k_ - yes - 1e-9)
    # reject when (yes + Y) / k <= reject  <=>  Y <= floor(reject * k - yes)
    max_rej = np.floor(reject * k_ - yes + 1e-9)
    p_acc = np.where(need_acc <= 0, 1.0,
                     np.where(need_acc > rest, 0.0, stats.betabinom.sf(need_acc - 1, rest, a, b)))
    p_rej = np.where(max_rej < 0, 0.0,
                     np.where(max_rej >= rest, 1.0, stats.betabinom.cdf(max_rej, rest, a, b)))
    done = rest <= 0
    if np.any(done):
        final = paper_decision(yes[done], n[done], accept=accept, reject=reject)
        p_acc = np.asarray(p_acc, dtype=np.float64)
        p_rej = np.asarray(p_rej, dtype=np.float64)
        p_acc[done] = (final == ACCEPT).astype(float)
        p_rej[done] = (final == REJECT).astype(float)
    return np.asarray(p_acc, dtype=np.float64), np.asarray(p_rej, dtype=np.float64)


def sequential_decision(yes, n, *, k: int, accept: float, reject: float, confidence: float,
                        prior_a: float = 1.0, prior_b: float = 1.0) -> np.ndarray:
    """Decision value of the sequential rule: accept / reject / split, or wait for more labels."""
    yes = np.asarray(yes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p_acc, p_rej = outcome_probabilities(yes, n, k=k, accept=accept, reject=reject,
                                         prior_a=prior_a, prior_b=prior_b)
    p_split = np.clip(1.0 - p_acc - p_rej, 0.0, 1.0)
    out = np.full(yes.shape, WAIT, dtype=object)
    out[p_split >= confidence] = SPLIT
    out[p_rej >= confidence] = REJECT
    out[p_acc >= confidence] = ACCEPT
    at_k = n >= np.broadcast_to(np.asarray(k, dtype=np.float64), n.shape)
    if np.any(at_k):
        out[at_k] = paper_decision(yes[at_k], n[at_k], accept=accept, reject=reject)
    return out
