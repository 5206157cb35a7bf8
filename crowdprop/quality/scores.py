"""Worker accuracy on gold questions, as Beta posteriors."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import beta as _beta

from ._base import _check_labels, gold_series

GOLD_SCORE_COLUMNS = ["worker", "n_gold", "n_correct", "accuracy_mean", "accuracy_lo", "accuracy_hi"]


def beta_interval(yes, no, *, prior_a: float = 1.0, prior_b: float = 1.0, credible: float = 0.95):
    r"""Posterior mean and equal-tailed credible interval of a success rate.

    With ``yes`` successes and ``no`` failures under a Beta(``prior_a``, ``prior_b``)
    prior, the posterior is Beta(:math:`a`, :math:`b`) with
    :math:`a = \text{prior\_a} + \text{yes}`, :math:`b = \text{prior\_b} + \text{no}`:

    .. math::

        \text{mean} = \frac{a}{a + b}, \quad
        \text{lo} = F^{-1}_{a,b}\Big(\frac{1 - c}{2}\Big), \quad
        \text{hi} = F^{-1}_{a,b}\Big(\frac{1 + c}{2}\Big)

    where :math:`F^{-1}_{a,b}` is the Beta quantile function and :math:`c` = ``credible``.

    Parameters
    ----------
    yes, no : array_like of float, broadcastable shapes
        Counts of successes and failures (>= 0; fractional counts are allowed).
    prior_a, prior_b : float
        Beta prior parameters (> 0). The default Beta(1, 1) is uniform.
    credible : float
        Posterior mass inside the interval, in (0, 1).

    Returns
    -------
    mean, lo, hi : ndarray of float, the broadcast shape of ``yes`` and ``no``
        (NumPy scalars for scalar inputs), with ``lo <= mean <= hi`` in [0, 1].

    Examples
    --------
    >>> mean, lo, hi = beta_interval(8, 2)
    >>> round(float(mean), 4), round(float(lo), 4), round(float(hi), 4)
    (0.75, 0.4822, 0.9398)
    """
    if not (prior_a > 0 and prior_b > 0):
        raise ValueError("prior_a and prior_b must be > 0")
    if not (0.0 < credible < 1.0):
        raise ValueError("credible must be in (0, 1)")
    yes = np.asarray(yes, dtype=float)
    no = np.asarray(no, dtype=float)
    if np.any(yes < 0) or np.any(no < 0):
        raise ValueError("counts must be >= 0")
    a = yes + prior_a
    b = no + prior_b
    tail = (1.0 - credible) / 2.0
    mean = a / (a + b)
    lo = _beta.ppf(tail, a, b)
    hi = _beta.ppf(1.0 - tail, a, b)
    if mean.ndim == 0:
        return mean[()], np.float64(lo), np.float64(hi)
    return mean, lo, hi


def gold_scores(answers: pd.DataFrame, gold: pd.DataFrame | pd.Series, *,
                prior: tuple[float, float] = (1.0, 1.0), credible: float = 0.95) -> pd.DataFrame:
    """Each worker's accuracy on gold questions, with a Beta credible interval.

    Parameters
    ----------
    answers : DataFrame, shape (n_answers, >= 3)
        Columns ``task``, ``worker``, ``label`` (0/1).
    gold : DataFrame, shape (n_gold, 2), or Series task -> label
        Known labels.
    prior : (float, float)
        Beta prior (a, b) on every worker's accuracy.
    credible : float
        Mass of the reported interval.

    Returns
    -------
    DataFrame, shape (n_workers, 6)
        Columns ``worker, n_gold, n_correct, accuracy_mean, accuracy_lo,
        accuracy_hi``, one row per worker in ``answers`` sorted by worker. A worker
        who answered no gold question has ``n_gold == 0`` and the prior's interval.
    """
    missing = {"task", "worker", "label"} - set(answers.columns)
    if missing:
        raise ValueError(f"answers: missing column(s) {sorted(missing)}")
    labels = _check_labels(answers["label"], "answers")
    g = gold_series(gold)
    known = g.reindex(answers["task"].to_numpy()).to_numpy() if g is not None and len(g) else \
        np.full(len(answers), np.nan)
    on_gold = ~pd.isna(known)
    correct = on_gold & (labels == np.where(on_gold, known, -1))
    per = pd.DataFrame({"worker": answers["worker"].to_numpy(), "n_gold": on_gold.astype(np.int64),
                        "n_correct": correct.astype(np.int64)})
    try:
        per = per.groupby("worker", sort=True).sum()
    except TypeError:
        per = per.groupby("worker", sort=False).sum()
    mean, lo, hi = beta_interval(per["n_correct"].to_numpy(), (per["n_gold"] - per["n_correct"]).to_numpy(),
                                 prior_a=prior[0], prior_b=prior[1], credible=credible)
    out = per.reset_index()
    out["accuracy_mean"] = mean
    out["accuracy_lo"] = lo
    out["accuracy_hi"] = hi
    return out[GOLD_SCORE_COLUMNS]
