"""The gold pool of a real campaign: masks whose answer is known, imported from a file."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from .store import RunDir

YES = {"1", "yes", "true", "y", "correct"}
NO = {"0", "no", "false", "n", "wrong"}


def _label(path, rec, value) -> int:
    v = str(value).strip().lower()
    if v in YES:
        return 1
    if v in NO:
        return 0
    raise InputError(path, rec, "label", f"expected yes/no (1/0, true/false), got {value!r}")


def read_records(path: str | os.PathLike, columns: Sequence[str]) -> tuple[Path, str, list[tuple[str, Any]]]:
    """The records of a gold file: JSON (a list of objects) or CSV whose header holds ``columns``.

    Returns ``(path, "json" | "csv", [(where, record)])``: ``where`` names the record in errors
    (``record i`` of JSON, ``line n`` of CSV), a JSON record is an object with JSON values, a CSV
    record a dict of strings. A missing file, malformed JSON, a JSON that is not a list or a
    record that is not an object, a CSV without those columns or text that is not UTF-8 is an
    :class:`~crowdprop.errors.InputError` naming the file, the record and the field."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, None, None, "file not found")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(p, None, None, f"malformed JSON: {e}") from None
        if not isinstance(data, list):
            raise InputError(p, None, None, "expected a JSON list of records")
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise InputError(p, f"record {i}", None, "expected an object")
        return p, "json", [(f"record {i}", r) for i, r in enumerate(data)]
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise InputError(p, "line 1", "header", f"expected columns {','.join(columns)}")
            return p, "csv", [(f"line {line}", r) for line, r in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise InputError(p, None, None, "not UTF-8 text") from None


def read_gold_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``mask_id, label`` pairs from CSV (header ``mask_id,label``) or JSON
    (a list of objects with ``id`` or ``mask_id`` and ``label``, e.g. COCO results
    with a yes/no ``label`` added)."""
    p, kind, records = read_records(path, ("mask_id", "label"))
    pairs = []
    for where, r in records:
        if kind == "json":
            key = "mask_id" if "mask_id" in r else "id"
            if key not in r or isinstance(r[key], bool) or not isinstance(r[key], int):
                raise InputError(p, where, "id", "missing or not an integer mask id")
            if "label" not in r:
                raise InputError(p, where, "label", "missing")
            pairs.append((r[key], _label(p, where, r["label"])))
        else:
            try:
                mid = int(r["mask_id"])
            except (TypeError, ValueError):
                raise InputError(p, where, "mask_id", f"not an integer: {r['mask_id']!r}") from None
            pairs.append((mid, _label(p, where, r["label"])))
    if not pairs:
        raise InputError(p, None, None, "no golds in the file")
    df = pd.DataFrame(pairs, columns=["mask_id", "label"])
    dup = df["mask_id"].duplicated(keep=False) & ~df.duplicated(keep=False)
    if dup.any():
        raise InputError(p, f"mask_id {int(df.loc[dup, 'mask_id'].iloc[0])}", "label", "contradictory duplicate")
    return df.drop_duplicates()


def import_golds(run: RunDir, path) -> tuple[int, int]:
    """Add golds to the run's pool. Returns (added, pool size). Unknown mask ids are refused."""
    df = read_gold_file(path)
    ids = run.masks["mask_id"].to_numpy()
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    missing = ~df["mask_id"].isin(row_of.index)
    if missing.any():
        raise InputError(path, f"mask_id {int(df.loc[missing, 'mask_id'].iloc[0])}", "mask_id",
                         "not a mask of this run directory")
    new = pd.DataFrame({"mask_row": row_of.loc[df["mask_id"]].to_numpy(np.int64),
                        "label": df["label"].to_numpy(np.int64)})
    pool = run.golds
    merged = pd.concat([pool.loc[~pool["mask_row"].isin(new["mask_row"]), ["mask_row", "label"]], new],
                       ignore_index=True)
    merged = merged.sort_values("mask_row").reset_index(drop=True)
    run.write_table("golds", merged)
    return len(new), len(merged)


def answers_long(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usable answers in crowd-kit's long format (``task, worker, label``; task = mask_id)
    and the gold pool (``task, label``)."""
    ans = run.read_rounds("answers")
    mask_id = run.masks["mask_id"].to_numpy()
    if len(ans):
        ans = ans[ans["used"].astype(bool)]
        long = pd.DataFrame({"task": mask_id[ans["mask_row"].to_numpy(np.int64)], "worker": ans["worker_id"],
                             "label": ans["label"].astype(np.int64)})
        # crowd-kit allows one answer per (task, worker): a worker who met the same mask
        # twice (as a gold once the gold pool ran short) keeps their latest answer.
        long = long.drop_duplicates(["task", "worker"], keep="last").reset_index(drop=True)
    else:
        long = pd.DataFrame(columns=["task", "worker", "label"])
    g = run.golds
    gold = pd.DataFrame({"task": mask_id[g["mask_row"].to_numpy(np.int64)], "label": g["label"].astype(np.int64)})
    return long, gold
