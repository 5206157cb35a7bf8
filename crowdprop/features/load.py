"""Read user-supplied per-mask features (e.g. detector ROI "attention" features)."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger(__name__)

_FCOL = re.compile(r"^f(\d+)$")


def _check_finite(path, x: np.ndarray, mask_ids: np.ndarray, field_of, first_row: int = 0) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(x[i, j]) else "infinite value (or too large for float32)"
        raise InputError(path, f"row {first_row + i} (mask_id={int(mask_ids[i])})", field_of(j), f"{what}")


_ROWS = 1 << 16


def _load_npy(path: Path, masks: pd.DataFrame) -> np.ndarray:
    """The rows of a .npy, memory-mapped (no copy when it is float32 already), checked a chunk at a time."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure to parse is the user's file
        raise InputError(path, None, None, f"cannot read as a .npy array: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(path, None, "features", f"expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(path, None, "features", f"expected a 2-D (n_masks, d) array, got shape {arr.shape}")
    if arr.shape[0] != len(masks):
        raise InputError(path, None, "features",
                         f"has {arr.shape[0]} rows, the masks table has {len(masks)} (rows must align)")
    if arr.shape[1] == 0:
        raise InputError(path, None, "features", "has 0 columns")
    same = arr.dtype == np.float32 and arr.flags.c_contiguous
    x = arr if same else np.empty(arr.shape, dtype=np.float32)
    ids = masks["mask_id"].to_numpy()
    for a in range(0, arr.shape[0], _ROWS):
        with np.errstate(over="ignore"):  # too large for float32 -> inf, reported below
            blk = np.asarray(arr[a:a + _ROWS], dtype=np.float32)
        _check_finite(path, blk, ids[a:a + _ROWS], lambda j: f"column {j}", first_row=a)
        if not same:
            x[a:a + _ROWS] = blk
    return x


def _load_parquet(path: Path, masks: pd.DataFrame) -> np.ndarray:
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise InputError(path, None, None, f"cannot read as Parquet: {e}") from None
    if "mask_id" not in df.columns:
        raise InputError(path, None, "mask_id", "missing column")
    ids = df["mask_id"]
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError(path, f"row {i}", "mask_id", "missing value")
    if not pd.api.types.is_integer_dtype(ids.dtype):
        raise InputError(path, None, "mask_id", f"expected integers, got {ids.dtype}")
    ids = ids.to_numpy(np.int64)
    fcols = sorted(((int(m.group(1)), c) for c in df.columns if (m := _FCOL.match(str(c)))), key=lambda t: t[0])

    if "features" in df.columns:
        if fcols:
            raise InputError(path, None, "features", "give either a 'features' column or f0..f{d-1} columns, not both")
        col = df["features"].tolist()
        d = None
        for i, v in enumerate(col):
            if v is None or (np.ndim(v) == 0):
                raise InputError(path, f"row {i} (mask_id={ids[i]})", "features", "missing or not a list of numbers")
            if d is None:
                d = len(v)
            elif len(v) != d:
                raise InputError(path, f"row {i} (mask_id={ids[i]})", "features",
                                 f"has {len(v)} values, expected {d} (as in row 0)")
        if not d:
            raise InputError(path, None, "features", "vectors are empty")
        stacked = np.stack([np.asarray(v) for v in col]) if col else np.zeros((0, d), np.float32)
        if stacked.dtype.kind not in "biuf":
            bad = next(i for i, v in enumerate(col) if np.asarray(v).dtype.kind not in "biuf")
            raise InputError(path, f"row {bad} (mask_id={ids[bad]})", "features",
                             f"non-numeric values (dtype {np.asarray(col[bad]).dtype})")
        with np.errstate(over="ignore"):
            x = stacked.astype(np.float32)
        field_of = lambda j: f"features[{j}]"  # noqa: E731
    elif fcols:
        idx = [k for k, _ in fcols]
        if idx != list(range(len(idx))):
            missing = sorted(set(range(max(idx) + 1)) - set(idx))
            raise InputError(path, None, f"f{missing[0]}", "missing column (feature columns must be f0..f{d-1})")
        for _, c in fcols:
            if not (pd.api.types.is_numeric_dtype(df[c].dtype) and not pd.api.types.is_bool_dtype(df[c].dtype)):
                raise InputError(path, None, c, f"non-numeric column (dtype {df[c].dtype})")
        with np.errstate(over="ignore"):
            x = df[[c for _, c in fcols]].to_numpy(np.float64, na_value=np.nan).astype(np.float32)
        field_of = lambda j: f"f{j}"  # noqa: E731
    else:
        raise InputError(path, None, "features", "no feature columns: expected 'features' (list) or f0, f1, ...")

    _check_finite(path, x, ids, field_of)

    uniq, first, cnt = np.unique(ids, return_index=True, return_counts=True)
    if np.any(cnt > 1):
        mid = uniq[np.flatnonzero(cnt > 1)[0]]
        rows = np.flatnonzero(ids == mid)
        raise InputError(path, f"row {int(rows[1])} (mask_id={int(mid)})", "mask_id",
                         f"duplicate mask_id (also row {int(rows[0])})")
    want = masks["mask_id"].to_numpy(np.int64)
    pos = np.searchsorted(uniq, want)
    pos_c = np.minimum(pos, len(uniq) - 1) if len(uniq) else pos
    found = (pos < len(uniq)) & (uniq[pos_c] == want) if len(uniq) else np.zeros(len(want), bool)
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        raise InputError(path, f"mask_id={int(want[k])}", "mask_id",
                         f"no features for this mask ({int((~found).sum())} of {len(want)} masks missing)")
    extra = len(uniq) - len(want)
    if extra > 0:
        log.warning("%s: %d rows have mask ids that are not in the masks table; ignored", path, extra)
    return np.ascontiguousarray(x[first[pos]])


def load_features(path: str | os.PathLike, masks: pd.DataFrame) -> np.ndarray:
    """Read per-mask feature vectors from a file and align them with ``masks``.

    Two formats:

    ``.npy``
        A numeric ``(n, d)`` array whose row ``i`` belongs to row ``i`` of the
        masks table (same order as ``masks.parquet``).
    ``.parquet``
        A table keyed by ``mask_id`` (int), in any row order, with either one
        list column ``features`` (every row a vector of the same length ``d``) or
        numeric columns ``f0, f1, ..., f{d-1}``. Every mask needs exactly one row;
        rows for unknown mask ids are ignored with a warning.

    Parameters
    ----------
    path : path-like
    masks : DataFrame, n rows, column ``mask_id``

    Returns
    -------
    features : (n, d) float32, row ``i`` for ``masks.iloc[i]``

    Raises
    ------
    crowdprop.errors.InputError
        Naming the file, the row (and its mask_id) and the field: file missing or
        unreadable, unknown extension, non-numeric values, wrong row count or
        vector length, NaN or infinite values, missing or duplicate mask ids.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, None, None, "file not found")
    if not p.is_file():
        raise InputError(p, None, None, "not a file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        x = _load_npy(p, masks)
    elif suffix in (".parquet", ".pq"):
        x = _load_parquet(p, masks)
    else:
        raise InputError(p, None, None, f"unknown feature file type '{p.suffix}' (expected .npy or .parquet)")
    log.info("read %d x %d features from %s", x.shape[0], x.shape[1], p)
    return x
