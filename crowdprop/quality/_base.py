"""Shared plumbing of the aggregation estimators: input checks and integer codes.

Glossary (shapes)
-----------------
answers : DataFrame, shape (n_answers, 3)
    Long format of crowd-kit: columns ``task`` (hashable key), ``worker`` (str)
    and ``label`` (0/1; 1 = "yes, the mask is correct"). Extra columns are ignored.
gold : DataFrame, shape (n_gold, 2), or Series
    Columns ``task`` and ``label`` (0/1), or a Series indexed by task.
t, w, y : ndarray of int64, shape (n_answers,)
    Task code, worker code and label of each answer. Codes index the sorted
    unique tasks / workers, so results never depend on row order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TIE_RULES = ("no", "yes", "random")


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of ``values`` over its sorted uniques.

    Keys of mixed types that do not compare are sorted by (type name, str(key)).
    """
    try:
        codes, uniques = pd.factorize(values, sort=True)
        return codes.astype(np.int64), pd.Index(uniques)
    except TypeError:
        pass
    codes, uniques = pd.factorize(values, sort=False)
    keys = list(uniques)
    order = sorted(range(len(keys)), key=lambda i: (type(keys[i]).__name__, str(keys[i])))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank[codes], pd.Index([keys[i] for i in order], dtype=object)


@dataclass(frozen=True)
class Encoded:
    """Answers as integer arrays, with the keys the codes stand for."""

    t: np.ndarray
    w: np.ndarray
    y: np.ndarray
    tasks: pd.Index
    workers: pd.Index
    gold_mask: np.ndarray
    """shape (n_tasks,) bool: the task has a known label."""
    gold_label: np.ndarray
    """shape (n_tasks,) int8: the known label where ``gold_mask``, else -1."""

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_workers(self) -> int:
        return len(self.workers)


def _check_labels(values: pd.Series, what: str) -> np.ndarray:
    if values.isna().any():
        raise ValueError(f"{what}: column 'label' has missing values")
    arr = values.to_numpy()
    if arr.dtype == bool:
        return arr.astype(np.int64)
    try:
        as_int = arr.astype(np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: column 'label' must hold 0 or 1") from None
    if not np.all((as_int == 0) | (as_int == 1)) or not np.all(as_int == arr):
        raise ValueError(f"{what}: column 'label' must hold 0 or 1")
    return as_int


def gold_series(gold: pd.DataFrame | pd.Series | None) -> pd.Series | None:
    """Known labels as a Series task -> 0/1 (``None`` stays ``None``).

    Raises
    ------
    ValueError
        Missing columns, labels other than 0/1, or a task given two different labels.
    """
    if gold is None:
        return None
    if isinstance(gold, pd.Series):
        df = pd.DataFrame({"task": gold.index.to_numpy(), "label": gold.to_numpy()})
    else:
        missing = {"task", "label"} - set(gold.columns)
        if missing:
            raise ValueError(f"gold: missing column(s) {sorted(missing)}")
        df = gold[["task", "label"]]
    labels = _check_labels(df["label"], "gold")
    s = pd.Series(labels, index=pd.Index(df["task"].to_numpy()), name="label")
    if s.index.has_duplicates:
        both = s.groupby(level=0).nunique()
        if (both > 1).any():
            raise ValueError(f"gold: task {both[both > 1].index[0]!r} has two different labels")
        s = s[~s.index.duplicated()]
    return s


def encode(data: pd.DataFrame, gold: pd.DataFrame | pd.Series | None = None) -> Encoded:
    """Check the long answer table and turn it into integer arrays.

    Raises
    ------
    ValueError
        Missing columns, empty table, missing task/worker, labels other than 0/1.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError("answers must be a pandas DataFrame with columns task, worker, label")
    missing = {"task", "worker", "label"} - set(data.columns)
    if missing:
        raise ValueError(f"answers: missing column(s) {sorted(missing)}")
    if len(data) == 0:
        raise ValueError("answers: the table is empty")
    if data["task"].isna().any() or data["worker"].isna().any():
        raise ValueError("answers: columns 'task' and 'worker' must not have missing values")
    y = _check_labels(data["label"], "answers")
    t, tasks = _codes(data["task"])
    w, workers = _codes(data["worker"])
    gold_mask = np.zeros(len(tasks), dtype=bool)
    gold_label = np.full(len(tasks), -1, dtype=np.int8)
    g = gold_series(gold)
    if g is not None and len(g):
        pos = tasks.get_indexer(g.index)
        hit = pos >= 0
        gold_mask[pos[hit]] = True
        gold_label[pos[hit]] = g.to_numpy()[hit]
    return Encoded(t=t, w=w, y=y, tasks=tasks, workers=workers,
                   gold_mask=gold_mask, gold_label=gold_label)


def check_tie_rule(on_tie: str) -> None:
    if on_tie not in TIE_RULES:
        raise ValueError(f"on_tie must be one of {TIE_RULES}, got {on_tie!r}")


def check_prior(prior: tuple[float, float], name: str) -> tuple[float, float]:
    a, b = (float(x) for x in prior)
    if not (a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"{name} must be two finite numbers > 0, got {prior!r}")
    return a, b


def labels_from_probas(p: np.ndarray, on_tie: str, random_state) -> np.ndarray:
    """0/1 labels from P(label=1): 1 above 0.5, 0 below, ``on_tie`` at exactly 0.5.

    ``on_tie``: ``"no"`` labels ties 0 (a mask is called correct only by a strict
    majority of the evidence), ``"yes"`` labels them 1, ``"random"`` flips a fair
    coin from ``numpy.random.default_rng(random_state)``, one draw per tied task in
    sorted task order.
    """
    labels = (p > 0.5).astype(np.int64)
    tie = p == 0.5
    if on_tie == "yes":
        labels[tie] = 1
    elif on_tie == "random" and tie.any():
        rng = np.random.default_rng(random_state)
        labels[tie] = rng.integers(0, 2, size=int(tie.sum()))
    return labels


def clamp(p: np.ndarray, enc: Encoded) -> np.ndarray:
    """Set P(label=1) of gold tasks to their known label (in place) and return ``p``."""
    if enc.gold_mask.any():
        p[enc.gold_mask] = enc.gold_label[enc.gold_mask].astype(float)
    return p


def vote_share(enc: Encoded) -> np.ndarray:
    """Share of "yes" answers per task, shape (n_tasks,)."""
    n = np.bincount(enc.t, minlength=enc.n_tasks)
    yes = np.bincount(enc.t, weights=enc.y, minlength=enc.n_tasks)
    return yes / n

