"""Validating many COCO records at once: the fast path of :mod:`crowdprop.masks.coco`.

A batch of parsed records (JSON objects) is checked column by column: one list
comprehension per field, the type checks on the set of types, the ranges and the
ground-truth lookups in numpy, and every compressed RLE string of the batch decoded
by one pass of numpy calls (:func:`crowdprop.masks.rle.runs_many`), from which the
areas and boxes come as well. The fast path only ever says "this batch is fine, here
are its columns" or "look closer" (``None``); the readers then validate that batch
record by record with the exact checks and messages of :mod:`crowdprop.masks.coco`,
so a bad record is reported exactly as before, and anything unusual (integral floats
as ids, polygons, uncompressed RLE, missing fields) is handled by the same code as
before.

Functions here depend only on their arguments (no state across batches), so batches can
be validated in worker processes; what spans batches (duplicate ids, "either every
record has an id or none does") is checked by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import rle

PRED_IOU_FIELDS = ("pred_iou", "predicted_iou", "mask_iou")
_NA = object()


@dataclass(frozen=True)
class Reference:
    """What records are checked against: the ground truth's images and categories (sorted ids)."""

    image_ids: np.ndarray | None = None
    heights: np.ndarray | None = None
    widths: np.ndarray | None = None
    category_ids: np.ndarray | None = None

    @classmethod
    def of(cls, image_ids, heights, widths, category_ids) -> "Reference":
        o = np.argsort(np.asarray(image_ids, dtype=np.int64), kind="stable")
        return cls(np.asarray(image_ids, dtype=np.int64)[o], np.asarray(heights, dtype=np.int64)[o],
                   np.asarray(widths, dtype=np.int64)[o], np.sort(np.asarray(category_ids, dtype=np.int64)))


def _ints(values: list) -> np.ndarray | None:
    if set(map(type, values)) != {int}:
        return None
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None


def _probs(values: list) -> np.ndarray | None:
    if not set(map(type, values)) <= {float, int}:
        return None
    try:
        a = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if not (np.isfinite(a).all() and (a >= 0.0).all() and (a <= 1.0).all()):
        return None
    return a


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Positions of ``values`` in ``sorted_ids``; None if one is missing."""
    if len(sorted_ids) == 0:
        return None
    pos = np.searchsorted(sorted_ids, values)
    pos = np.minimum(pos, len(sorted_ids) - 1)
    return pos if np.array_equal(sorted_ids[pos], values) else None


def _rles(segs: list, ref: Reference, image_ids: np.ndarray) -> dict | None:
    """Compressed RLE segmentations of a batch: sizes, counts, areas and boxes, or None."""
    if set(map(type, segs)) != {dict}:
        return None
    sizes = [s.get("size") for s in segs]
    counts = [s.get("counts") for s in segs]
    if set(map(type, sizes)) != {list} or set(map(type, counts)) != {str} or set(map(len, sizes)) != {2}:
        return None
    hw = _ints([v for s in sizes for v in s])
    if hw is None:
        return None
    h, w = hw[0::2], hw[1::2]
    if not ((h > 0).all() and (w > 0).all()):
        return None
    if ref.image_ids is not None:
        pos = _lookup(ref.image_ids, image_ids)
        if pos is None or not (np.array_equal(ref.heights[pos], h) and np.array_equal(ref.widths[pos], w)):
            return None
    try:
        runs, offs = rle.runs_many(counts)
    except (ValueError, UnicodeEncodeError):
        return None
    if not np.array_equal(rle.totals_many(runs, offs), h * w):
        return None
    return {"height": h, "width": w, "rle": counts, "area": rle.areas_many(runs, offs),
            "box": rle.bbox_many(counts, runs, offs, h, w)}


def predictions_fast(records: list, ref: Reference) -> dict | None:
    """Columns of a batch of COCO results, or None when a record needs a closer look.

    Keys: ``has_ids`` (whether the records carry ``id``), ``mask_id`` (None without ids),
    ``image_id``, ``category_id``, ``score``, ``pred_iou``, ``height``, ``width``, ``rle``,
    ``area``, ``box`` ``(n, 4)``."""
    if not records or set(map(type, records)) != {dict}:
        return None
    has_ids = "id" in records[0]
    ids = None
    if has_ids:
        vals = [r.get("id", _NA) for r in records]
        ids = _ints(vals)
        if ids is None:
            return None
    elif any("id" in r for r in records):
        return None
    img = _ints([r.get("image_id", _NA) for r in records])
    cat = _ints([r.get("category_id", _NA) for r in records])
    if img is None or cat is None:
        return None
    if ref.image_ids is not None and _lookup(ref.image_ids, img) is None:
        return None
    if ref.category_ids is not None and _lookup(ref.category_ids, cat) is None:
        return None
    score = _probs([r.get("score", _NA) for r in records])
    if score is None:
        return None
    piou = np.full(len(records), math.nan)
    present = [sum(1 for r in records if f in r) for f in PRED_IOU_FIELDS]
    if present[0] == len(records) or (present[0] == 0 and present[1] == len(records)) \
            or (present[0] == present[1] == 0 and present[2] == len(records)):
        f = PRED_IOU_FIELDS[next(k for k, c in enumerate(present) if c)]
        piou = _probs([r[f] for r in records])
        if piou is None:
            return None
    elif any(present):
        return None
    seg = _rles([r.get("segmentation", _NA) for r in records], ref, img)
    if seg is None:
        return None
    return {"has_ids": has_ids, "mask_id": ids, "image_id": img, "category_id": cat, "score": score,
            "pred_iou": piou, **seg}


def annotations_fast(records: list, ref: Reference) -> dict | None:
    """Columns of a batch of ground-truth annotations, or None when one needs a closer look.

    Keys: ``id``, ``image_id``, ``category_id``, ``iscrowd``, ``height``, ``width``, ``rle``,
    ``area``, ``box``."""
    if not records or set(map(type, records)) != {dict}:
        return None
    ids = _ints([r.get("id", _NA) for r in records])
    img = _ints([r.get("image_id", _NA) for r in records])
    cat = _ints([r.get("category_id", _NA) for r in records])
    if ids is None or img is None or cat is None:
        return None
    if _lookup(ref.image_ids, img) is None:
        return None
    if ref.category_ids is not None and _lookup(ref.category_ids, cat) is None:
        return None
    seg = _rles([r.get("segmentation", _NA) for r in records], ref, img)
    if seg is None:
        return None
    crowd = np.array([int(bool(r.get("iscrowd", 0))) for r in records], dtype=np.int64)
    return {"id": ids, "image_id": img, "category_id": cat, "iscrowd": crowd, **seg}


def summaries(counts: list, heights, widths) -> tuple[np.ndarray, np.ndarray]:
    """Areas ``(n,)`` and COCO boxes ``(n, 4)`` of valid compressed RLE strings."""
    runs, offs = rle.runs_many(counts)
    return rle.areas_many(runs, offs), rle.bbox_many(counts, runs, offs, heights, widths)
