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

A run of records read in pieces (:mod:`crowdprop.masks.jsonstream`) is first decoded
with msgspec straight into typed records (:func:`predictions_typed`,
:func:`annotations_typed`): no dict per record, about three times faster than the
standard library's parser. Only plain records decode that way (the fields of COCO
results or annotations with compressed RLE, nothing else); any other run is parsed with
``json`` and checked as above, so the columns and the messages are the same either way.

Functions here depend only on their arguments (no state across batches), so batches can
be validated in worker processes; what spans batches (duplicate ids, "either every
record has an id or none does") is checked by the caller.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import msgspec
import numpy as np
from msgspec import UNSET, UnsetType

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


def _dict_rles(segs: list) -> tuple[list, list] | None:
    """Sizes (flat ``[h0, w0, h1, w1, ...]``) and counts of compressed RLE segmentations
    given as parsed JSON, or None."""
    if set(map(type, segs)) != {dict}:
        return None
    sizes = [s.get("size") for s in segs]
    counts = [s.get("counts") for s in segs]
    if set(map(type, sizes)) != {list} or set(map(type, counts)) != {str} or set(map(len, sizes)) != {2}:
        return None
    return [v for s in sizes for v in s], counts


def _rles(hw: list, counts: list, ref: Reference, image_ids: np.ndarray) -> dict | None:
    """Compressed RLE segmentations of a batch (:func:`_dict_rles`): sizes, counts, areas and boxes, or None."""
    sizes = _ints(hw)
    if sizes is None:
        return None
    h, w = sizes[0::2], sizes[1::2]
    if not ((h > 0).all() and (w > 0).all()):
        return None
    if ref.image_ids is not None:
        pos = _lookup(ref.image_ids, image_ids)
        if pos is None or ref.heights is None or ref.widths is None or not (
                np.array_equal(ref.heights[pos], h) and np.array_equal(ref.widths[pos], w)):
            return None
    try:
        runs, offs = rle.runs_many(counts)
    except (ValueError, UnicodeEncodeError):
        return None
    if not np.array_equal(rle.totals_many(runs, offs), h * w):
        return None
    return {"height": h, "width": w, "rle": counts, "area": rle.areas_many(runs, offs),
            "box": rle.bbox_many(counts, runs, offs, h, w)}


def _piou_field(present: list[int], n: int) -> str | None:
    """The predicted-IoU field a batch uses ('' for none), or None when records disagree."""
    if present[0] == n or (present[0] == 0 and present[1] == n) or (present[0] == present[1] == 0 and present[2] == n):
        return PRED_IOU_FIELDS[next(k for k, c in enumerate(present) if c)]
    return None if any(present) else ""


def _prediction_columns(ref: Reference, ids: list | None, img: list, cat: list, score: list, piou: list | None,
                        hw: list, counts: list) -> dict | None:
    """Check a batch's raw columns (``ids`` None without ids; ``piou`` None without a
    predicted IoU): the columns of :func:`predictions_fast`, or None."""
    has_ids = ids is not None
    mask_id = None
    if ids is not None:
        mask_id = _ints(ids)
        if mask_id is None:
            return None
    image_id = _ints(img)
    category_id = _ints(cat)
    if image_id is None or category_id is None:
        return None
    if ref.image_ids is not None and _lookup(ref.image_ids, image_id) is None:
        return None
    if ref.category_ids is not None and _lookup(ref.category_ids, category_id) is None:
        return None
    scores = _probs(score)
    if scores is None:
        return None
    pious = np.full(len(image_id), math.nan) if piou is None else _probs(piou)
    if pious is None:
        return None
    seg = _rles(hw, counts, ref, image_id)
    if seg is None:
        return None
    return {"has_ids": has_ids, "mask_id": mask_id, "image_id": image_id, "category_id": category_id,
            "score": scores, "pred_iou": pious, **seg}


def predictions_fast(records: list, ref: Reference) -> dict | None:
    """Columns of a batch of COCO results, or None when a record needs a closer look.

    Keys: ``has_ids`` (whether the records carry ``id``), ``mask_id`` (None without ids),
    ``image_id``, ``category_id``, ``score``, ``pred_iou``, ``height``, ``width``, ``rle``,
    ``area``, ``box`` ``(n, 4)``."""
    if not records or set(map(type, records)) != {dict}:
        return None
    has_ids = "id" in records[0]
    if not has_ids and any("id" in r for r in records):
        return None
    f = _piou_field([sum(1 for r in records if f in r) for f in PRED_IOU_FIELDS], len(records))
    segs = _dict_rles([r.get("segmentation", _NA) for r in records])
    if f is None or segs is None:
        return None
    return _prediction_columns(ref, [r.get("id", _NA) for r in records] if has_ids else None,
                               [r.get("image_id", _NA) for r in records], [r.get("category_id", _NA) for r in records],
                               [r.get("score", _NA) for r in records], [r[f] for r in records] if f else None, *segs)


def _annotation_columns(ref: Reference, ids: list, img: list, cat: list, crowd: list, hw: list,
                        counts: list) -> dict | None:
    """Check a batch's raw columns (``crowd``: 0 or 1 each): the columns of :func:`annotations_fast`, or None."""
    ann_id, image_id, category_id = _ints(ids), _ints(img), _ints(cat)
    if ann_id is None or image_id is None or category_id is None:
        return None
    if ref.image_ids is None or _lookup(ref.image_ids, image_id) is None:
        return None
    if ref.category_ids is not None and _lookup(ref.category_ids, category_id) is None:
        return None
    seg = _rles(hw, counts, ref, image_id)
    if seg is None:
        return None
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": np.array(crowd, dtype=np.int64),
            **seg}


def annotations_fast(records: list, ref: Reference) -> dict | None:
    """Columns of a batch of ground-truth annotations, or None when one needs a closer look.

    Keys: ``id``, ``image_id``, ``category_id``, ``iscrowd``, ``height``, ``width``, ``rle``,
    ``area``, ``box``."""
    if not records or set(map(type, records)) != {dict}:
        return None
    segs = _dict_rles([r.get("segmentation", _NA) for r in records])
    if segs is None:
        return None
    return _annotation_columns(ref, [r.get("id", _NA) for r in records], [r.get("image_id", _NA) for r in records],
                               [r.get("category_id", _NA) for r in records],
                               [int(bool(r.get("iscrowd", 0))) for r in records], *segs)


# Typed decoding: a run of records decoded straight into these (no dicts, nothing for the
# garbage collector to follow). Unknown fields are refused, so whatever decodes here is
# also what json.loads reads, value for value (same numbers, same strings, the last of
# repeated keys); anything else (NaN, 5.0 as an id, polygons, other fields, nesting, bytes
# that are not UTF-8) fails to decode and the run goes through json and the checks above.

class _Seg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    size: tuple[int, int]
    counts: str


class _Pred(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    image_id: int
    category_id: int
    segmentation: _Seg
    score: float
    id: int | UnsetType = UNSET
    pred_iou: float | UnsetType = UNSET
    predicted_iou: float | UnsetType = UNSET
    mask_iou: float | UnsetType = UNSET
    bbox: list[float] | UnsetType = UNSET
    area: float | UnsetType = UNSET


class _Ann(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: int
    image_id: int
    category_id: int
    segmentation: _Seg
    iscrowd: int | bool = 0
    area: float | UnsetType = UNSET
    bbox: list[float] | UnsetType = UNSET


_DECODERS: dict[type, msgspec.json.Decoder] = {_Pred: msgspec.json.Decoder(list[_Pred]),
                                               _Ann: msgspec.json.Decoder(list[_Ann])}


class Undecided:
    """The type of :data:`UNDECIDED`."""


UNDECIDED = Undecided()
"""What :func:`predictions_typed` and :func:`annotations_typed` return for a run they cannot decode."""


def _typed(kind, body: bytes) -> list | None:
    enabled = gc.isenabled()
    gc.disable()  # nothing decoded here can form a cycle
    try:
        return _DECODERS[kind].decode(b"[" + body + b"]")
    except (msgspec.DecodeError, RecursionError):
        return None
    finally:
        if enabled:
            gc.enable()


def predictions_typed(body: bytes, ref: Reference) -> dict | None | Undecided:
    """:func:`predictions_fast` of the records in ``body`` (an items run of
    :mod:`crowdprop.masks.jsonstream`), decoded without dicts; :data:`UNDECIDED` when
    they do not decode as plain COCO results with compressed RLE (then parse them and
    ask :func:`predictions_fast`)."""
    recs = _typed(_Pred, body)
    if recs is None:
        return UNDECIDED
    n = len(recs)
    ids = [r.id for r in recs]
    unset = ids.count(UNSET)
    if n == 0 or unset not in (0, n):  # either every record has an id or none does
        return None
    has_ids = unset == 0
    piou = {"pred_iou": [r.pred_iou for r in recs]}
    if UNSET in piou["pred_iou"]:
        piou["predicted_iou"] = [r.predicted_iou for r in recs]
        piou["mask_iou"] = [r.mask_iou for r in recs]
    f = _piou_field([n - piou[f].count(UNSET) if f in piou else 0 for f in PRED_IOU_FIELDS], n)
    if f is None:
        return None
    return _prediction_columns(ref, ids if has_ids else None, [r.image_id for r in recs],
                               [r.category_id for r in recs], [r.score for r in recs], piou[f] if f else None,
                               [v for r in recs for v in r.segmentation.size], [r.segmentation.counts for r in recs])


def annotations_typed(body: bytes, ref: Reference) -> dict | None | Undecided:
    """:func:`annotations_fast` of the records in ``body``, decoded without dicts;
    :data:`UNDECIDED` when they do not decode (see :func:`predictions_typed`)."""
    recs = _typed(_Ann, body)
    if recs is None:
        return UNDECIDED
    if not recs:
        return None
    return _annotation_columns(ref, [r.id for r in recs], [r.image_id for r in recs], [r.category_id for r in recs],
                               [int(bool(r.iscrowd)) for r in recs], [v for r in recs for v in r.segmentation.size],
                               [r.segmentation.counts for r in recs])


def summaries(counts: list, heights, widths) -> tuple[np.ndarray, np.ndarray]:
    """Areas ``(n,)`` and COCO boxes ``(n, 4)`` of valid compressed RLE strings."""
    runs, offs = rle.runs_many(counts)
    return rle.areas_many(runs, offs), rle.bbox_many(counts, runs, offs, heights, widths)
