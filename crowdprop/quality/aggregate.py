"""One call from answers to labels, and validating readers of answer and gold CSV files.

File formats (UTF-8 CSV with a header line; extra columns are ignored; column
names are case-insensitive)::

    answers.csv                 gold.csv
    task,worker,label           task,label
    m17,A1B2C3,yes              m17,1
    m17,Z9Y8X7,no               m40,no

``label`` is one of 1/0, yes/no, true/false (any case). Task keys are read as
text, so ``007`` and ``7`` are different tasks.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .ds import DawidSkene
from .mv import MajorityVote
from .onecoin import OneCoinDawidSkene

METHODS = {"onecoin": OneCoinDawidSkene, "ds": DawidSkene, "mv": MajorityVote}
"""Aggregation methods by their command-line name."""

LABEL_COLUMNS = ["task", "label", "probability"]

_LABEL_WORDS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0}


def make_estimator(method: str = "onecoin", *, random_state=0):
    """A fresh, unfitted estimator for ``method`` (one of :data:`METHODS`)."""
    try:
        cls = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})") from None
    return cls(random_state=random_state)


def aggregate(answers: pd.DataFrame, *, method: str = "onecoin",
              gold: pd.DataFrame | pd.Series | None = None, random_state=0) -> pd.DataFrame:
    """Aggregate yes/no answers into one label per task.

    Parameters
    ----------
    answers : DataFrame, shape (n_answers, >= 3)
        Columns ``task``, ``worker``, ``label`` (0/1).
    method : {"onecoin", "ds", "mv"}
        One-coin Dawid-Skene, full Dawid-Skene, or majority vote.
    gold : DataFrame (task, label) or Series task -> label, optional
        Known labels; answered gold tasks are clamped to them while fitting.
    random_state : int or numpy.random.Generator or None
        Seed for breaking ties (only ties at probability exactly 0.5 use it,
        and only with ``on_tie="random"``; the default tie rule labels them 0).

    Returns
    -------
    DataFrame, shape (n_tasks, 3)
        Columns ``task``, ``label`` (0/1), ``probability`` (P(label = 1)), one row
        per answered task, sorted by task.
    """
    est = make_estimator(method, random_state=random_state).fit(answers, gold)
    return pd.DataFrame({"task": est.labels_.index.to_numpy(), "label": est.labels_.to_numpy(),
                         "probability": est.probas_.to_numpy()})


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except OSError as e:
        raise InputError(path, None, None, f"cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(path, f"line {line}", None, "not UTF-8 text") from None


def _parse_label(value: str, path: Path, line: int) -> int:
    label = _LABEL_WORDS.get(value.strip().lower())
    if label is None:
        raise InputError(path, f"line {line}", "label",
                         f"{value!r} is not a label (use 1/0, yes/no or true/false)")
    return label


def _fast_table(text: str, columns: list[str]) -> dict[str, list[str]] | None:
    """The ``columns`` of a well-formed CSV as lists of stripped text, or ``None``
    when anything looks off (the caller then rereads the file line by line with
    :func:`_read_table`, which names the line and field of the problem).

    Only files without quote characters take this path, where pandas' parser and
    the csv module agree exactly.
    """
    if '"' in text:
        return None
    try:
        raw = pd.read_csv(io.StringIO(text), header=None, dtype=str, na_filter=False,
                          skip_blank_lines=True, index_col=False, engine="c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return None
    if len(raw) < 2 or raw.isna().to_numpy().any():
        return None
    header = [str(cell).strip().lower() for cell in raw.iloc[0]]
    if any(header.count(name) != 1 for name in columns):
        return None
    out = {}
    for name in columns:
        col = [x.strip() for x in raw.iloc[1:, header.index(name)].tolist()]
        if not all(col):
            return None
        out[name] = col
    return out


def _fast_labels(col: list[str]) -> np.ndarray | None:
    labels = [_LABEL_WORDS.get(x.lower(), -1) for x in col]
    arr = np.asarray(labels, dtype=np.int64)
    return None if (arr < 0).any() else arr


def _read_table(path: Path, text: str, columns: list[str]):
    """Yield (line number, {column: stripped text}) for each data row of a CSV file."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    index: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                for name in columns:
                    if name not in header:
                        raise InputError(path, f"line {line}", name,
                                         f"missing column (the header has: {', '.join(header)}; "
                                         f"need: {', '.join(columns)})")
                dup = sorted({h for h in header if header.count(h) > 1 and h in columns})
                if dup:
                    raise InputError(path, f"line {line}", dup[0], "column appears twice in the header")
                index = {name: header.index(name) for name in columns}
                continue
            if len(row) != len(header):
                raise InputError(path, f"line {line}", None,
                                 f"malformed CSV: {len(row)} fields, the header has {len(header)}")
            yield line, {name: row[i].strip() for name, i in index.items()}
    except csv.Error as e:
        raise InputError(path, f"line {reader.line_num}", None, f"malformed CSV: {e}") from None
    if header is None:
        raise InputError(path, None, None, f"empty file (expected a header line: {','.join(columns)})")


def read_answers_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check an answers CSV (columns task, worker, label).

    Returns
    -------
    DataFrame, shape (n_answers, 3)
        Columns ``task`` (str), ``worker`` (str), ``label`` (int64, 0/1) in file order.

    Raises
    ------
    InputError
        Naming the file, the line and the field: unreadable or non-UTF-8 file,
        malformed CSV, missing column, empty task or worker, a label outside
        1/0/yes/no/true/false, the same worker answering a task twice, no rows.
    """
    path = Path(path)
    text = _decode(path)
    fast = _fast_table(text, ["task", "worker", "label"])
    if fast is not None:
        fast_labels = _fast_labels(fast["label"])
        if fast_labels is not None:
            out = pd.DataFrame({"task": pd.Series(fast["task"], dtype=object),
                                "worker": pd.Series(fast["worker"], dtype=object), "label": fast_labels})
            if not out.duplicated(["task", "worker"]).any():
                return out
    tasks, workers, labels = [], [], []
    seen: dict[tuple[str, str], int] = {}
    for line, rec in _read_table(path, text, ["task", "worker", "label"]):
        if not rec["task"]:
            raise InputError(path, f"line {line}", "task", "empty task")
        if not rec["worker"]:
            raise InputError(path, f"line {line}", "worker", "empty worker")
        label = _parse_label(rec["label"], path, line)
        key = (rec["task"], rec["worker"])
        if key in seen:
            raise InputError(path, f"line {line}", "worker",
                             f"worker {key[1]!r} already answered task {key[0]!r} on line {seen[key]}")
        seen[key] = line
        tasks.append(rec["task"])
        workers.append(rec["worker"])
        labels.append(label)
    if not tasks:
        raise InputError(path, None, None, "no answers (the file has only a header)")
    return pd.DataFrame({"task": pd.Series(tasks, dtype=object), "worker": pd.Series(workers, dtype=object),
                         "label": np.asarray(labels, dtype=np.int64)})


def read_gold_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a gold CSV (columns task, label).

    Returns
    -------
    DataFrame, shape (n_gold, 2)
        Columns ``task`` (str) and ``label`` (int64, 0/1) in file order.

    Raises
    ------
    InputError
        As :func:`read_answers_csv`; a task listed twice is refused.
    """
    path = Path(path)
    text = _decode(path)
    fast = _fast_table(text, ["task", "label"])
    if fast is not None:
        fast_labels = _fast_labels(fast["label"])
        if fast_labels is not None:
            out = pd.DataFrame({"task": pd.Series(fast["task"], dtype=object), "label": fast_labels})
            if not out["task"].duplicated().any():
                return out
    tasks, labels = [], []
    seen: dict[str, int] = {}
    for line, rec in _read_table(path, text, ["task", "label"]):
        if not rec["task"]:
            raise InputError(path, f"line {line}", "task", "empty task")
        label = _parse_label(rec["label"], path, line)
        if rec["task"] in seen:
            raise InputError(path, f"line {line}", "task",
                             f"task {rec['task']!r} is already listed on line {seen[rec['task']]}")
        seen[rec["task"]] = line
        tasks.append(rec["task"])
        labels.append(label)
    if not tasks:
        raise InputError(path, None, None, "no gold labels (the file has only a header)")
    return pd.DataFrame({"task": pd.Series(tasks, dtype=object), "label": np.asarray(labels, dtype=np.int64)})


def write_labels_csv(path: str | os.PathLike, labels: pd.DataFrame) -> None:
    """Write ``labels`` (columns task, label, probability) atomically as CSV."""
    from ..io import atomic_write_text

    buf = io.StringIO()
    labels[LABEL_COLUMNS].to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    atomic_write_text(path, buf.getvalue())
