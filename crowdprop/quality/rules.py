"""Quality-control rules as small pure functions, set by the ``[quality]`` config table
(:class:`crowdprop.config.QualitySection`).

Golds are questions whose answer is known (a mask checked by hand). Every HIT mixes
``crowd.golds_per_hit`` golds among its questions; a worker's answers to them decide
whether the assignment is approved, and repeated failures block the worker.

Example ``campaign.toml`` table (every key optional)::

    [quality]
    min_gold_accuracy = 0.6          # approve an assignment at >= 60 % golds right
    min_seconds_per_question = 0.3   # faster than this is rejected as not looked at
    soft_block_after = 2             # failed HITs before a worker is blocked
    block_below_accuracy = 0.8       # or when gold accuracy is surely below this
    hard_block = false               # true: MTurk CreateWorkerBlock instead of a qualification
    qualification_size = 10          # golds in the qualification test
    qualification_pass = 0.9         # share right to pass it
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np
import pandas as pd

from ..config import QualitySection
from ._base import _check_labels

FEEDBACK_MAX_CHARS = 1024
"""MTurk's limit on RequesterFeedback."""


class Verdict(NamedTuple):
    """What to do with one submitted assignment."""

    approve: bool
    reason: str | None
    """``None`` when approved; else comma-separated codes: ``too_fast``, ``low_gold_accuracy``."""
    feedback: str | None
    """Polite RequesterFeedback for MTurk (<= 1024 characters); ``None`` when approved."""


def judge_assignment(n_gold: int, n_gold_correct: int, seconds: float | None, n_questions: int,
                     cfg: QualitySection) -> Verdict:
    """Approve or reject one assignment from its gold answers and time spent.

    Rules, both must pass:

    * gold accuracy: ``n_gold_correct / n_gold >= cfg.min_gold_accuracy``
      (an assignment without golds passes);
    * speed: ``seconds / n_questions >= cfg.min_seconds_per_question``
      (``seconds=None``, unknown, passes).

    Parameters
    ----------
    n_gold, n_gold_correct : int
        Golds in the assignment and how many were answered right.
    seconds : float or None
        Time between accept and submit.
    n_questions : int
        Questions in the HIT, golds included.
    cfg : QualitySection

    Returns
    -------
    Verdict
    """
    if n_gold < 0 or n_gold_correct < 0 or n_gold_correct > n_gold:
        raise ValueError(f"need 0 <= n_gold_correct <= n_gold, got {n_gold_correct} of {n_gold}")
    if n_questions < 1:
        raise ValueError("n_questions must be >= 1")
    if seconds is not None and seconds < 0:
        raise ValueError("seconds must be >= 0")
    reasons = []
    sentences = []
    if seconds is not None and seconds < cfg.min_seconds_per_question * n_questions - 1e-9:
        reasons.append("too_fast")
        sentences.append(
            f"The {n_questions} questions were answered in {seconds:.0f} seconds, "
            f"less than the {cfg.min_seconds_per_question:g} seconds per question needed to look at each image."
        )
    if n_gold > 0 and n_gold_correct < cfg.min_gold_accuracy * n_gold - 1e-9:
        reasons.append("low_gold_accuracy")
        sentences.append(
            f"{n_gold} of the questions have answers checked by hand, and {n_gold_correct} of them "
            f"were answered correctly; we need at least {math.ceil(cfg.min_gold_accuracy * n_gold - 1e-9)}."
        )
    if not reasons:
        return Verdict(True, None, None)
    feedback = ("Thank you for working on our HIT. Unfortunately we cannot approve this assignment. "
                + " ".join(sentences)
                + " Please read the instructions and the examples again; we look forward to your next HIT.")
    return Verdict(False, ",".join(reasons), feedback[:FEEDBACK_MAX_CHARS])


def passes_qualification(n_questions: int, n_correct: int, cfg: QualitySection) -> bool:
    """Whether a qualification test with ``n_correct`` of ``n_questions`` golds right
    is passed: ``n_correct >= cfg.qualification_pass * n_questions``.

    An empty test (``cfg.qualification_size == 0``, so ``n_questions == 0``) passes.
    """
    if n_questions < 0 or not (0 <= n_correct <= n_questions):
        raise ValueError(f"need 0 <= n_correct <= n_questions, got {n_correct} of {n_questions}")
    return n_correct >= cfg.qualification_pass * n_questions - 1e-9


def workers_to_block(history: pd.DataFrame, cfg: QualitySection) -> tuple[set, set]:
    """Workers to block, from the approve/reject history of their assignments.

    A worker with at least ``cfg.soft_block_after`` rejected assignments
    (``approved == False``; pending rows with NaN do not count) is blocked.

    Parameters
    ----------
    history : DataFrame, shape (n_assignments, >= 2)
        Columns ``worker`` and ``approved`` (bool, or NaN while pending); with
        ``n_gold`` and ``n_gold_correct`` also the cumulative gold-accuracy rule
        (``block_below_accuracy``) applies.
    cfg : QualitySection

    Returns
    -------
    (soft, hard) : (set, set)
        The blocked workers go into ``soft`` (qualification-based block) when
        ``cfg.hard_block`` is False, else into ``hard`` (CreateWorkerBlock); the
        other set is empty.
    """
    missing = {"worker", "approved"} - set(history.columns)
    if missing:
        raise ValueError(f"history: missing column(s) {sorted(missing)}")
    approved = history["approved"]
    failed = approved.notna() & (approved == False)  # noqa: E712 (NaN = pending)
    counts = history.loc[failed.to_numpy(), "worker"].value_counts()
    blocked = set(counts.index[counts.to_numpy() >= cfg.soft_block_after])
    if cfg.block_below_accuracy > 0 and {"n_gold", "n_gold_correct"} <= set(history.columns):
        from scipy import stats

        g = history.groupby("worker")[["n_gold", "n_gold_correct"]].sum()
        upper = stats.beta.ppf(0.975, 1 + g["n_gold_correct"], 1 + g["n_gold"] - g["n_gold_correct"])
        blocked |= set(g.index[(g["n_gold"].to_numpy() > 0) & (upper < cfg.block_below_accuracy)])
    return (set(), blocked) if cfg.hard_block else (blocked, set())


def _sorted_pool(pool: pd.DataFrame) -> pd.DataFrame:
    try:
        return pool.sort_values("task", kind="stable").reset_index(drop=True)
    except TypeError:
        return pool.assign(_k=pool["task"].astype(str)).sort_values("_k", kind="stable") \
            .drop(columns="_k").reset_index(drop=True)


def choose_golds(pool: pd.DataFrame, n: int, *, used_counts: Mapping | pd.Series | None = None,
                 rng: np.random.Generator) -> list:
    """Pick ``n`` distinct golds, balanced between "yes" and "no", least used first.

    Half of the golds (``n // 2``) have label 1 and half label 0; with an odd ``n``
    the extra one goes to a class drawn at random. When a class has too few golds
    the other class tops it up. Within a class, golds are taken in increasing order
    of ``used_counts`` (ties in random order), so a gold is only shown again once
    every gold of its class has been shown as often.

    Parameters
    ----------
    pool : DataFrame, shape (n_pool, >= 2)
        Columns ``task`` (unique) and ``label`` (0/1).
    n : int
        Golds to pick, ``0 <= n <= n_pool``.
    used_counts : mapping or Series, task -> int, optional
        How often each gold was shown already (missing tasks: 0).
    rng : numpy.random.Generator

    Returns
    -------
    list of task keys, length ``n``, in random order.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if n > len(pool):
        raise ValueError(f"asked for {n} golds but the pool has {len(pool)}")
    if pool["task"].duplicated().any():
        raise ValueError("pool: duplicate tasks")
    if n == 0:
        return []
    pool = _sorted_pool(pool[["task", "label"]])
    used = pd.Series(used_counts if used_counts is not None else {}, dtype=float)
    counts = used.reindex(pool["task"].to_numpy()).fillna(0).to_numpy() if len(used) else np.zeros(len(pool))
    labels = _check_labels(pool["label"], "pool")
    tiebreak = rng.random(len(pool))
    order = {c: np.flatnonzero(labels == c) for c in (0, 1)}
    for c in (0, 1):
        idx = order[c]
        order[c] = idx[np.lexsort((tiebreak[idx], counts[idx]))]
    want = {1: n // 2, 0: n // 2}
    if n % 2:
        want[int(rng.integers(0, 2))] += 1
    for c in (0, 1):  # top up a class that is short from the other one
        short = want[c] - len(order[c])
        if short > 0:
            want[c] -= short
            want[1 - c] += short
    picked = np.concatenate([order[1][:want[1]], order[0][:want[0]]])
    picked = rng.permutation(picked)
    return pool["task"].to_numpy()[picked].tolist()


def positions_for_golds(n_questions: int, n_golds: int, rng: np.random.Generator) -> np.ndarray:
    """Where the golds go in a HIT: distinct positions drawn uniformly.

    Returns
    -------
    ndarray of int64, shape (n_golds,), sorted, values in ``[0, n_questions)``.
    """
    if not (0 <= n_golds <= n_questions):
        raise ValueError(f"need 0 <= n_golds <= n_questions, got {n_golds} and {n_questions}")
    return np.sort(rng.choice(n_questions, size=n_golds, replace=False)).astype(np.int64)
