"""COCO JSON in and out: detector results, instances ground truth, exported annotations.

Readers validate every record and raise :class:`crowdprop.errors.InputError`
naming the file, the record (its index, and its id where it has one) and the
field. Nothing is written by this module except :func:`write_instances`.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..schema import coerce_masks
from . import batches, jsonstream, rle
from .batches import PRED_IOU_FIELDS

log = logging.getLogger(__name__)

@dataclass
class GroundTruth:
    """COCO instances ground truth, reduced to what crowdprop needs."""

    path: str
    images: pd.DataFrame  # id, file_name, height, width, coco_url
    categories: pd.DataFrame  # id, name, supercategory
    annotations: pd.DataFrame  # id, image_id, category_id, iscrowd, rle, height, width, area

    def image_sizes(self) -> dict[int, tuple[int, int]]:
        im = self.images
        return dict(zip(im["id"].to_numpy(np.int64).tolist(),
                        zip(im["height"].to_numpy(np.int64).tolist(), im["width"].to_numpy(np.int64).tolist())))


def _load_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(p, None, None, "file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(p, f"line {e.lineno} column {e.colno}", None, f"malformed JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(p, f"byte {e.start}", None, "not UTF-8 text") from None


def _rec(i: int, r: Any) -> str:
    if isinstance(r, dict) and "id" in r:
        return f"record {i} (id={r['id']!r})"
    return f"record {i}"


def _int_field(path, i, r, field, rec: str | None = None) -> int:
    rec = rec or _rec(i, r)
    if field not in r:
        raise InputError(path, rec, field, "missing")
    v = r[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise InputError(path, rec, field, f"expected an integer, got {v!r}")
    if not -(2**63) <= v < 2**63:
        raise InputError(path, rec, field, f"{v!r} is outside the 64-bit integer range")
    return int(v)


def _prob_field(path, i, r, field, required: bool) -> float:
    if field not in r:
        if required:
            raise InputError(path, _rec(i, r), field, "missing")
        return math.nan
    v = r[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InputError(path, _rec(i, r), field, f"expected a number in [0, 1], got {v!r}")
    return float(v)


def _segmentation(path, i, r, sizes: dict[int, tuple[int, int]] | None, image_id: int,
                  pending: list | None = None) -> tuple[str, int, int]:
    """Validate one ``segmentation`` and return (compressed counts, h, w).

    With ``pending``, a compressed RLE string is not decoded here: ``(i, r, counts, h, w)``
    is appended for :class:`_RLEBatch` to check many at once (same messages)."""
    if "segmentation" not in r:
        raise InputError(path, _rec(i, r), "segmentation", "missing")
    seg = r["segmentation"]
    known = sizes.get(image_id) if sizes is not None else None
    if isinstance(seg, dict):
        size = seg.get("size")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise InputError(path, _rec(i, r), "segmentation.size", f"expected [height, width], got {size!r}")
        h, w = int(size[0]), int(size[1])
        if known is not None and (h, w) != known:
            raise InputError(path, _rec(i, r), "segmentation.size",
                             f"RLE size {h}x{w} disagrees with image {image_id} ({known[0]}x{known[1]})")
        counts = seg.get("counts")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise InputError(path, _rec(i, r), "segmentation.counts", "uncompressed RLE must be non-negative integers")
            n = rle.uncompressed_length(counts)
            if n != h * w:
                raise InputError(path, _rec(i, r), "segmentation.counts",
                                 f"RLE covers {n} pixels, size {h}x{w} has {h * w}")
            return rle.from_uncompressed(counts, h, w), h, w
        if isinstance(counts, str):
            if pending is not None:
                pending.append((i, r, counts, h, w))
                return counts, h, w
            _check_compressed(path, i, r, counts, h, w)
            return counts, h, w
        raise InputError(path, _rec(i, r), "segmentation.counts", "expected a string or a list of integers")
    if isinstance(seg, list):
        if known is None:
            raise InputError(path, _rec(i, r), "segmentation",
                             "polygon masks need the image size: pass ground truth (--gt) that lists this image")
        if len(seg) == 0:
            raise InputError(path, _rec(i, r), "segmentation", "empty polygon list")
        h, w = known
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
                raise InputError(path, _rec(i, r), f"segmentation[{j}]", "polygon must be a list of finite numbers")
            if len(poly) % 2:
                raise InputError(path, _rec(i, r), f"segmentation[{j}]", "polygon has an odd number of coordinates")
            if len(poly) < 6:
                raise InputError(path, _rec(i, r), f"segmentation[{j}]",
                                 f"polygon has {len(poly) // 2} points, needs >= 3")
            _check_polygon_bounds(path, i, r, j, poly, h, w)
        return rle.from_polygons(seg, h, w), h, w
    raise InputError(path, _rec(i, r), "segmentation", f"expected an RLE object or polygons, got {type(seg).__name__}")


POLYGON_MARGIN = 1.0
"""Polygon points may lie outside their image by this many image widths (heights); further
out is refused: pycocotools rasterises every point and crashes on coordinates near 1e7."""


def _check_polygon_bounds(path, i, r, j, poly: list, h: int, w: int) -> None:
    xs, ys = poly[0::2], poly[1::2]
    for axis, vals, size in (("x", xs, w), ("y", ys, h)):
        lo, hi = -POLYGON_MARGIN * size, (1.0 + POLYGON_MARGIN) * size
        if min(vals) < lo or max(vals) > hi:
            v = next(v for v in vals if not lo <= v <= hi)
            raise InputError(path, _rec(i, r), f"segmentation[{j}]",
                             f"{axis} coordinate {v!r} is far outside the {h}x{w} image "
                             f"(allowed {lo:g} to {hi:g})")


def _check_compressed(path, i, r, counts: str, h: int, w: int) -> None:
    """The checks of one compressed RLE string (raises the record's InputError)."""
    try:
        n = rle.compressed_length(counts, h, w)
    except (ValueError, UnicodeEncodeError) as e:
        raise InputError(path, _rec(i, r), "segmentation.counts", f"bad compressed RLE: {e}") from None
    if n != h * w:
        raise InputError(path, _rec(i, r), "segmentation.counts",
                         f"RLE covers {n} pixels, size {h}x{w} has {h * w}")


BATCH = 65_536
"""Records validated together (:mod:`crowdprop.masks.batches`)."""


class _RLEBatch:
    """Compressed RLE strings of a batch of records, checked together.

    :meth:`check` raises the same InputError as checking each string on its own would, for
    the first bad one in record order; ``relabel`` rewrites the record part of the message
    (ground-truth annotations are named ``annotations[i]``)."""

    def __init__(self, path, relabel=None):
        self.path = path
        self.relabel = relabel
        self.items: list[tuple] = []

    def check(self) -> None:
        items, self.items = self.items, []
        if not items:
            return
        counts = [t[2] for t in items]
        try:
            runs, offs = rle.runs_many(counts)
            ok = rle.totals_many(runs, offs) == np.array([t[3] * t[4] for t in items], dtype=np.int64)
            if ok.all():
                return
        except (ValueError, UnicodeEncodeError):
            pass
        for i, r, c, h, w in items:  # find the first bad one, with its own message
            try:
                _check_compressed(self.path, i, r, c, h, w)
            except InputError as e:
                e = self.relabel(e, i, r) if self.relabel else e
                raise _at(e, i) from None
        raise AssertionError("batch check failed but no string is bad")  # pragma: no cover


def _at(e: InputError, i: int) -> InputError:
    """``e``, marked as raised at record position ``i`` (read back by :func:`_index_of`)."""
    e.__dict__["index"] = i
    return e


def _index_of(e: InputError) -> int:
    """The record position :func:`_at` marked ``e`` with."""
    return int(e.__dict__["index"])


class _Ids:
    """Duplicate-id check across batches: no set while ids only increase (the usual case).

    Ids are kept in record order (``chunks``: one array per batch), so the record that
    first had an id is found again for the message."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.pending: list = []  # ids of the batch being checked record by record
        self.last = None
        self.seen: set | None = None

    def _start_set(self) -> set:
        seen: set = set()
        for c in self.chunks:
            seen.update(c.tolist())
        seen.update(self.pending)
        self.seen = seen
        return seen

    def add_many(self, ids: np.ndarray) -> bool:
        """Accept a batch of ids, or return False (accepting nothing) if one is repeated."""
        if ids.size == 0:
            return True
        seen = self.seen
        if seen is None:
            if (self.last is None or ids[0] > self.last) and bool(np.all(ids[1:] > ids[:-1])):
                self.last = int(ids[-1])
                self.chunks.append(ids)
                return True
            seen = self._start_set()
        vals = ids.tolist()
        if len(set(vals)) != len(vals) or not seen.isdisjoint(vals):
            return False
        seen.update(vals)
        self.chunks.append(ids)
        return True

    def add(self, v) -> bool:
        """Accept one id of the batch being checked record by record; False if seen before."""
        seen = self.seen
        if seen is None:
            if self.last is None or v > self.last:
                self.last = v
                self.pending.append(v)
                return True
            seen = self._start_set()
        if v in seen:
            return False
        seen.add(v)
        self.pending.append(v)
        return True

    def commit(self) -> None:
        self.chunks.append(np.asarray(self.pending, dtype=np.int64))
        self.pending = []

    def first_index(self, v) -> int:
        k = 0
        for c in self.chunks:
            hit = np.flatnonzero(c == v)
            if hit.size:
                return k + int(hit[0])
            k += len(c)
        return k + self.pending.index(v)


def _columns(parts: list[dict], names: list[str]) -> dict:
    """Concatenate the per-batch columns."""
    out: dict[str, Any] = {}
    for c in names:
        if c == "rle":
            out[c] = [s for p in parts for s in p[c]]
        else:
            out[c] = np.concatenate([p[c] for p in parts]) if parts else np.zeros(0)
    return out


_ANN_COLUMNS = ["id", "image_id", "category_id", "iscrowd", "rle", "height", "width", "area"]
_PRED_COLUMNS = ["mask_id", "image_id", "category_id", "score", "pred_iou", "height", "width", "rle", "area", "box"]


def _slow_columns(rows: list[tuple], names: list[str]) -> dict:
    """Columns of rows validated one by one (RLE strings already checked), with areas and boxes."""
    cols = {c: [r[k] for r in rows] for k, c in enumerate(names)}
    out = {c: (v if c == "rle" else np.asarray(v)) for c, v in cols.items()}
    out["area"], out["box"] = batches.summaries(cols["rle"], out["height"], out["width"])
    return out


class _Annotations:
    """Validates ground-truth annotations batch by batch (fast path, then record by record).

    With ``categories=None`` (an instances file whose categories come after its
    annotations, as COCO's do) category ids are checked by :meth:`check_categories` once
    the categories are known, and the first bad record is still the one reported."""

    def __init__(self, path, sizes: dict, categories: set | None, ref: batches.Reference):
        self.path, self.sizes, self.categories, self.ref = path, sizes, categories, ref
        self.ids = _Ids()
        self.parts: list[dict] = []
        self.n = 0
        self.unchecked: list[tuple] = []  # (record, category id, label) of the batch in the works

    @staticmethod
    def rec_of(i, a) -> str:
        return f"annotations[{i}]" + (f" (id={a['id']!r})" if "id" in a else "")

    def relabel(self, e, i, a):
        return InputError(e.file, self.rec_of(i, a), e.field, e.message)

    def add(self, fast: dict | None, records) -> None:
        """Add a batch: its fast-path columns (or None), ``records()`` gives its records."""
        if fast is not None and self.ids.add_many(fast["id"]):
            self.parts.append(fast)
        else:
            self.parts.append(self._slow(records()))
        self.n += len(self.parts[-1]["rle"])

    def _slow(self, records: list) -> dict:
        path, pending = self.path, _RLEBatch(self.path, self.relabel)
        rows, labels = [], []
        i = self.n
        self.unchecked = []
        try:
            for i, a in enumerate(records, start=self.n):
                if not isinstance(a, dict):
                    raise InputError(path, f"annotations[{i}]", None, "expected an object")
                rec = self.rec_of(i, a)
                aid = _int_field(path, i, a, "id", rec)
                if not self.ids.add(aid):
                    raise InputError(path, rec, "id", "duplicate annotation id")
                iid = _int_field(path, i, a, "image_id")
                if iid not in self.sizes:
                    raise InputError(path, rec, "image_id", f"image {iid} is not in 'images'")
                cid = _int_field(path, i, a, "category_id")
                if self.categories is None:
                    self.unchecked.append((i, cid, rec))
                elif cid not in self.categories:
                    raise InputError(path, rec, "category_id", f"category {cid} is not in 'categories'")
                try:
                    counts, h, w = _segmentation(path, i, a, self.sizes, iid, pending.items)
                except InputError as e:
                    raise self.relabel(e, i, a) from None
                rows.append((aid, iid, cid, int(bool(a.get("iscrowd", 0))), counts, h, w))
                labels.append(rec)
        except InputError as e:
            _at(e, i)
            pending.check()  # an earlier record of the batch may be bad too: it comes first
            raise
        pending.check()
        self.ids.commit()
        self.unchecked = []
        out = _slow_columns(rows, _ANN_COLUMNS[:-1])
        out["labels"] = labels
        return out

    def check_categories(self, categories: set, error: InputError | None) -> None:
        """Raise the first category error, or ``error`` (at record ``error.index``) if it comes first."""
        known = np.array(sorted(categories), dtype=np.int64)
        k = 0
        for p in self.parts:
            cid = p["category_id"]
            bad = np.flatnonzero(~np.isin(cid, known))
            if bad.size:
                j = int(bad[0])
                label = p["labels"][j] if "labels" in p else f"annotations[{k + j}] (id={int(p['id'][j])})"
                raise InputError(self.path, label, "category_id", f"category {int(cid[j])} is not in 'categories'")
            k += len(cid)
        if error is not None:
            for i, cid, label in self.unchecked:  # records of the failing batch up to the error
                if i <= _index_of(error) and cid not in categories:
                    raise InputError(self.path, label, "category_id", f"category {cid} is not in 'categories'")
            raise error

    def frame(self) -> pd.DataFrame:
        cols = _columns(self.parts, _ANN_COLUMNS)
        return pd.DataFrame({c: cols[c] for c in _ANN_COLUMNS}).astype(
            {c: np.int64 for c in _ANN_COLUMNS if c not in ("rle", "area")})


class _Predictions:
    """Validates COCO results batch by batch (fast path, then record by record)."""

    def __init__(self, path, gt: GroundTruth | None):
        self.path = path
        self.gt = gt
        self.cats = set(gt.categories["id"].tolist()) if gt is not None else None
        self.ref = (batches.Reference.of(gt.images["id"], gt.images["height"], gt.images["width"],
                                         gt.categories["id"]) if gt is not None else batches.Reference())
        self.ids = _Ids()
        self.has_ids: bool | None = None
        self.parts: list[dict] = []
        self.n = 0
        self.first_empty: str | None = None

    @functools.cached_property
    def sizes(self) -> dict | None:
        """Image sizes by id (for checking records one by one)."""
        return self.gt.image_sizes() if self.gt is not None else None

    def add(self, fast: dict | None, records) -> None:
        """Add a batch: its fast-path columns (or None), ``records()`` gives its records."""
        if fast is not None and self.has_ids is not None and fast["has_ids"] != self.has_ids:
            fast = None
        if fast is not None and fast["has_ids"] and not self.ids.add_many(fast["mask_id"]):
            fast = None
        if fast is not None:
            self.has_ids = fast["has_ids"]
            if not fast["has_ids"]:
                fast["mask_id"] = np.arange(self.n, self.n + len(fast["rle"]), dtype=np.int64)
            part = fast
        else:
            part = self._slow(records())
        if self.first_empty is None:
            empty = np.flatnonzero(part["area"] == 0)
            if len(empty):
                i = int(empty[0])
                self.first_empty = part["labels"][i] if "labels" in part else (
                    f"record {self.n + i} (id={int(part['mask_id'][i])})" if self.has_ids else f"record {self.n + i}")
        self.parts.append(part)
        self.n += len(part["rle"])

    def _slow(self, records: list) -> dict:
        path, sizes, cats, pending = self.path, self.sizes, self.cats, _RLEBatch(self.path)
        rows: list[tuple] = []
        labels: list[str] = []
        try:
            for i, r in enumerate(records, start=self.n):
                if not isinstance(r, dict):
                    raise InputError(path, f"record {i}", None, "expected an object")
                if self.has_ids is None:
                    self.has_ids = "id" in r
                if self.has_ids != ("id" in r):
                    raise InputError(path, _rec(i, r), "id", "either every record has an id or none does")
                mid = _int_field(path, i, r, "id") if self.has_ids else i
                if self.has_ids and not self.ids.add(mid):
                    raise InputError(path, _rec(i, r), "id", f"duplicate id (also record {self.ids.first_index(mid)})")
                iid = _int_field(path, i, r, "image_id")
                if sizes is not None and iid not in sizes:
                    raise InputError(path, _rec(i, r), "image_id", f"image {iid} is not in the ground truth")
                cid = _int_field(path, i, r, "category_id")
                if cats is not None and cid not in cats:
                    raise InputError(path, _rec(i, r), "category_id", f"category {cid} is not in the ground truth")
                score = _prob_field(path, i, r, "score", required=True)
                piou = math.nan
                for f in PRED_IOU_FIELDS:
                    if f in r:
                        piou = _prob_field(path, i, r, f, required=True)
                        break
                counts, h, w = _segmentation(path, i, r, sizes, iid, pending.items)
                rows.append((mid, iid, cid, score, piou, h, w, counts))
                labels.append(_rec(i, r))
        except InputError:
            pending.check()  # an earlier record of the batch may be bad too: it comes first
            raise
        pending.check()
        if self.has_ids:
            self.ids.commit()
        out = _slow_columns(rows, _PRED_COLUMNS[:-2])
        out["labels"] = labels
        return out

    def frame(self) -> pd.DataFrame:
        if self.first_empty is not None:
            raise InputError(self.path, self.first_empty, "segmentation", "empty mask (0 pixels)")
        cols = _columns(self.parts, _PRED_COLUMNS)
        box = cols.pop("box").reshape(-1, 4)
        df = pd.DataFrame(cols)
        df["bbox_x"], df["bbox_y"], df["bbox_w"], df["bbox_h"] = box.T
        return df


def _batched(records: list):
    for a in range(0, len(records), BATCH):
        yield records[a:a + BATCH]


class _Legacy(Exception):
    """This file is read whole (see :mod:`crowdprop.masks.jsonstream`)."""


def _predictions_task(body: bytes, ref: batches.Reference) -> dict | None:
    """One run of a results file's records: fast-path columns, or None (checked by the caller)."""
    fast = batches.predictions_typed(body, ref)
    if isinstance(fast, batches.Undecided):
        return batches.predictions_fast(jsonstream.parse_items(body), ref)
    return fast


def _annotations_task(body: bytes, ref: batches.Reference) -> dict | None:
    """One run of an instances file's annotations: fast-path columns, or None."""
    fast = batches.annotations_typed(body, ref)
    if isinstance(fast, batches.Undecided):
        return batches.annotations_fast(jsonstream.parse_items(body), ref)
    return fast


def _engine_or_local(engine):
    from ..engine import current

    return engine if engine is not None else current()


def load_ground_truth(path: str | os.PathLike, *, engine=None) -> GroundTruth:
    """Read and validate COCO instances ground truth.

    The file is read in pieces (:mod:`crowdprop.masks.jsonstream`), its annotations
    validated in batches on ``engine`` (:mod:`crowdprop.engine`; when None, the active one)
    while it is read, when its images come before its annotations (COCO's order); otherwise,
    or when it is not well-formed JSON, it is read whole. The table and the error are the
    same either way."""
    from ..engine import stage

    with stage(None, "gt"):
        try:
            return _ground_truth_stream(path, _engine_or_local(engine))
        except (_Legacy, jsonstream.Malformed):
            pass
        return _ground_truth_whole(path)


def _ground_truth_whole(path) -> GroundTruth:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, None, None, "expected a COCO instances object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, None, key, "missing or not a list")
    images = _images(path, data["images"])
    cats = _categories(path, data["categories"])
    anns = _annotations_of(path, images, {c["id"] for c in cats})
    for batch in _batched(data["annotations"]):
        anns.add(batches.annotations_fast(batch, anns.ref), lambda batch=batch: batch)
    del data
    return _ground_truth(path, images, cats, anns)


def _annotations_of(path, images: list[dict], categories: set | None) -> "_Annotations":
    ref = batches.Reference.of([r["id"] for r in images], [r["height"] for r in images], [r["width"] for r in images],
                               sorted(categories) if categories is not None else [])
    if categories is None:
        ref = batches.Reference(ref.image_ids, ref.heights, ref.widths, None)
    return _Annotations(path, {r["id"]: (r["height"], r["width"]) for r in images}, categories, ref)


def _ground_truth(path, images: list[dict], cats: list[dict], anns: "_Annotations") -> GroundTruth:
    return GroundTruth(
        path=str(path),
        images=pd.DataFrame(images, columns=["id", "file_name", "height", "width", "coco_url"]),
        categories=pd.DataFrame(cats, columns=["id", "name", "supercategory"]),
        annotations=anns.frame(),
    )


def _ground_truth_stream(path, engine) -> GroundTruth:
    """:func:`load_ground_truth` on a file read in pieces (raises _Legacy or Malformed to read it whole)."""
    if not Path(path).is_file():
        raise _Legacy
    it = jsonstream.events(path)
    if next(it) != ("object", None):
        raise _Legacy  # read whole: the same message as before
    seen: set = set()
    values: dict = {}  # images, categories and annotations when not streamed (not a list)
    lists: dict = {"images": None, "categories": None}
    state: dict[str, Any] = {"images": None, "cats": None, "anns": None, "errors": {}}
    errors = state["errors"]

    def check_lists(key):
        if key == "images" and "images" not in errors:
            try:
                state["images"] = _images(path, lists["images"])
            except InputError as e:
                errors["images"] = e
        if key == "categories" and "categories" not in errors:
            try:
                state["cats"] = _categories(path, lists["categories"])
            except InputError as e:
                errors["categories"] = e

    def tasks():
        key = None
        for ev in it:
            kind = ev[0]
            if kind in ("array", "value"):
                key = ev[1]
                if key in seen:
                    raise _Legacy  # a repeated key: json.load keeps the last one
                seen.add(key)
                if kind == "value":
                    values[key] = ev[2]
                elif key in lists:
                    lists[key] = []
                elif key == "annotations":
                    if lists["images"] is None and "images" not in values:
                        raise _Legacy  # annotations before images
                    images = state["images"] if state["images"] is not None else []
                    cats = {c["id"] for c in state["cats"]} if state["cats"] is not None else None
                    state["anns"] = _annotations_of(path, images, cats)
            elif kind == "items":
                if key == "annotations":
                    yield ev[2], state["anns"].ref
                else:
                    elements = jsonstream.parse_items(ev[2])
                    if key in lists:
                        lists[key].extend(elements)
            elif kind == "end" and key in lists:
                check_lists(key)

    bodies: list = []

    def keep(gen):
        for body, ref in gen:
            bodies.append(body)
            yield body, ref

    for fast in engine.map(_annotations_task, keep(tasks())):
        body = bodies.pop(0)
        if errors or state["images"] is None:
            continue  # reading on for JSON errors only: they come first
        try:
            state["anns"].add(fast, lambda body=body: jsonstream.parse_items(body))
        except InputError as e:
            errors["annotations"] = e
    # the checks of the file as a whole, in the order of reading it whole
    for key in ("images", "annotations", "categories"):
        if key in values or key not in seen:
            raise InputError(path, None, key, "missing or not a list")
    for key in ("images", "categories"):
        if key in errors:
            raise errors[key]
    anns = state["anns"]
    if anns is None:  # an empty annotations list
        anns = _annotations_of(path, state["images"], None)
    if anns.categories is None:
        anns.check_categories({c["id"] for c in state["cats"]}, errors.get("annotations"))
    elif "annotations" in errors:
        raise errors["annotations"]
    return _ground_truth(path, state["images"], state["cats"], anns)


def _images_fast(records: list) -> list[dict] | None:
    """:func:`_images` of records that pass every check (integer ids, positive sizes, no id
    twice), column by column; None when one needs a closer look."""
    if set(map(type, records)) - {dict}:
        return None
    ids, h, w = (batches._ints([r.get(f, batches._NA) for r in records]) for f in ("id", "height", "width"))
    if records and (ids is None or h is None or w is None or (h <= 0).any() or (w <= 0).any()
                    or len(np.unique(ids)) != len(ids)):
        return None
    return [{"id": im["id"], "file_name": str(im.get("file_name", "")), "height": im["height"], "width": im["width"],
             "coco_url": str(im.get("coco_url", ""))} for im in records]


def _images(path, records: list) -> list[dict]:
    fast = _images_fast(records)
    if fast is not None:
        return fast
    images = []
    seen: set[int] = set()
    for i, im in enumerate(records):
        if not isinstance(im, dict):
            raise InputError(path, f"images[{i}]", None, "expected an object")
        iid = _int_field(path, i, im, "id")
        if iid in seen:
            raise InputError(path, f"images[{i}] (id={iid})", "id", "duplicate image id")
        seen.add(iid)
        h = _int_field(path, i, im, "height")
        w = _int_field(path, i, im, "width")
        if h <= 0 or w <= 0:
            raise InputError(path, f"images[{i}] (id={iid})", "height", f"image size must be positive, got {h}x{w}")
        images.append({"id": iid, "file_name": str(im.get("file_name", "")), "height": h, "width": w,
                       "coco_url": str(im.get("coco_url", ""))})
    return images


def _categories(path, records: list) -> list[dict]:
    cats = []
    seen_c: set[int] = set()
    for i, c in enumerate(records):
        if not isinstance(c, dict):
            raise InputError(path, f"categories[{i}]", None, "expected an object")
        cid = _int_field(path, i, c, "id")
        if cid in seen_c:
            raise InputError(path, f"categories[{i}] (id={cid})", "id", "duplicate category id")
        seen_c.add(cid)
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(path, f"categories[{i}] (id={cid})", "name", "empty class name")
        cats.append({"id": cid, "name": name, "supercategory": str(c.get("supercategory", ""))})
    return cats


def load_predictions(path: str | os.PathLike, gt: GroundTruth | None = None, *,
                     progress: bool | None = None, engine=None, timings: dict | None = None) -> pd.DataFrame:
    """Read and validate COCO results (a JSON list) into the masks table.

    Each record needs ``image_id``, ``category_id``, ``segmentation`` (RLE or
    polygons) and ``score``; ``id`` and a predicted-IoU field
    (one of :data:`PRED_IOU_FIELDS`) are optional. With ground truth, image and
    category ids must exist there and RLE sizes must match the image.
    A JSON list is read in pieces and validated in batches on ``engine``
    (:mod:`crowdprop.engine`; when None, the active one) while it is read; anything else
    is read whole. ``progress``: None shows a bar on a terminal only, False never.
    ``timings``: a dict that gets the seconds spent reading (``predictions``) and matching
    ground truth (``match``).
    """
    from ..engine import stage

    engine = _engine_or_local(engine)
    with stage(timings, "predictions"):
        df = _read_predictions(path, gt, engine)
    if gt is not None:
        with stage(timings, "match"):
            gi, ga = match_ground_truth(df, gt, progress=progress, engine=engine)
        df["gt_iou"] = gi
        df["gt_ann_id"] = ga
    log.info("read %d predictions over %d classes from %s", len(df), df["category_id"].nunique(), path)
    return coerce_masks(df)


def _read_predictions(path, gt: GroundTruth | None, engine) -> pd.DataFrame:
    preds = _Predictions(path, gt)
    try:
        _predictions_stream(path, preds, engine)
    except (_Legacy, jsonstream.Malformed):
        preds = _Predictions(path, gt)
        data = _load_json(path)
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            data = data["annotations"]
        if not isinstance(data, list):
            raise InputError(path, None, None, "expected a JSON list of COCO results")
        for batch in _batched(data):
            preds.add(batches.predictions_fast(batch, preds.ref), lambda batch=batch: batch)
        del data
    if preds.n == 0:
        raise InputError(path, None, None, "no predictions in the file")
    return preds.frame()


def _predictions_stream(path, preds: "_Predictions", engine) -> None:
    """Validate a results file read in pieces into ``preds`` (raises _Legacy or Malformed to read it whole)."""
    if not Path(path).is_file():
        raise _Legacy
    it = jsonstream.events(path)
    if next(it) != ("array", None):
        raise _Legacy
    bodies: list = []

    def tasks():
        for ev in it:
            bodies.append(ev[2])
            yield ev[2], preds.ref

    error = None
    for fast in engine.map(_predictions_task, tasks()):
        body = bodies.pop(0)
        if error is not None:
            continue  # reading on for JSON errors only: they come first
        try:
            preds.add(fast, lambda body=body: jsonstream.parse_items(body))
        except InputError as e:
            error = e
    if error is not None:
        raise error


def _group_keys(img_a, cat_a, img_b, cat_b) -> tuple[np.ndarray, np.ndarray]:
    """Dense int64 keys of (image, category) pairs, equal across both lists for equal pairs."""
    img = np.concatenate([np.asarray(img_a, np.int64), np.asarray(img_b, np.int64)])
    cat = np.concatenate([np.asarray(cat_a, np.int64), np.asarray(cat_b, np.int64)])
    _, ii = np.unique(img, return_inverse=True)
    uc, ci = np.unique(cat, return_inverse=True)
    key = ii.astype(np.int64) * len(uc) + ci
    return key[:len(img_a)], key[len(img_a):]


MATCH_CHUNK = 65_536
"""Predictions matched together (with the ground truth they are compared to)."""


def _match_task(p_counts: list, g_counts: list, pi: np.ndarray, gi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU pairs ``(p_counts[pi[k]], g_counts[gi[k]])`` (pairs grouped by ``pi``, ascending):
    the best IoU of each ``p`` and the first pair reaching it."""
    p_runs, p_off = rle.runs_many(p_counts)
    g_runs, g_off = rle.runs_many(g_counts)
    iou = rle.iou_pairs(rle.intervals_many(p_runs, p_off), rle.intervals_many(g_runs, g_off),
                        rle.areas_many(p_runs, p_off), rle.areas_many(g_runs, g_off), pi, gi)
    first = np.flatnonzero(np.r_[True, pi[1:] != pi[:-1]])
    top = np.maximum.reduceat(iou, first)
    at_top = np.flatnonzero(iou == top[np.searchsorted(first, np.arange(len(pi)), side="right") - 1])
    _, k = np.unique(pi[at_top], return_index=True)  # the first instance reaching the best
    return top, at_top[k]


def match_ground_truth(masks: pd.DataFrame, gt: GroundTruth, *, progress: bool | None = None,
                       engine=None) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of each mask with a same-class, non-crowd ground-truth instance.

    Returns ``(iou, ann_id)``: a mask with no same-class instance in its image gets 0 and
    -1; otherwise the highest IoU and the first instance (in file order) reaching it, so a
    mask overlapping none gets 0 and the image's first instance of its class. Masks are
    matched in chunks of :data:`MATCH_CHUNK`, all pairs of a chunk at once
    (:func:`rle.iou_pairs`), one task per chunk on ``engine`` (when None, the active one).
    ``progress``: None shows a bar on a terminal only, False never."""
    from tqdm.auto import tqdm

    n = len(masks)
    best = np.zeros(n, dtype=np.float64)
    best_id = np.full(n, -1, dtype=np.int64)
    ann = gt.annotations[gt.annotations["iscrowd"].to_numpy() == 0]
    if n == 0 or len(ann) == 0:
        return best, best_id
    pk, gk = _group_keys(masks["image_id"].to_numpy(), masks["category_id"].to_numpy(),
                         ann["image_id"].to_numpy(), ann["category_id"].to_numpy())
    gorder = np.argsort(gk, kind="stable")  # file order within a group
    gks = gk[gorder]
    porder = np.argsort(pk, kind="stable")
    g_lo = np.searchsorted(gks, pk[porder], side="left")
    g_n = np.searchsorted(gks, pk[porder], side="right") - g_lo
    p_rle = masks["rle"].to_numpy()
    g_rle = ann["rle"].to_numpy()
    g_ids = ann["id"].to_numpy(np.int64)
    chunks = []

    def tasks():
        for a in range(0, n, MATCH_CHUNK):
            cnt = g_n[a:a + MATCH_CHUNK]
            has = cnt > 0
            if not has.any():
                continue
            rows, cnt, lo = porder[a:a + MATCH_CHUNK][has], cnt[has], g_lo[a:a + MATCH_CHUNK][has]
            pi = np.repeat(np.arange(len(rows)), cnt)
            first = np.zeros(len(rows), dtype=np.int64)
            np.cumsum(cnt[:-1], out=first[1:])
            gi = gorder[lo[pi] + (np.arange(pi.size) - first[pi])]
            ug, ginv = np.unique(gi, return_inverse=True)
            chunks.append((rows, gi))
            yield p_rle[rows].tolist(), g_rle[ug].tolist(), pi, ginv

    bar = tqdm(total=n, desc="matching ground truth", unit="mask", leave=False,
               disable=None if progress is not False else True)
    for top, at in _engine_or_local(engine).map(_match_task, tasks()):
        rows, gi = chunks.pop(0)
        best[rows] = top
        best_id[rows] = g_ids[gi[at]]
        bar.update(len(rows))
    bar.close()
    return best, best_id


def write_instances(path: str | os.PathLike, masks: pd.DataFrame, images: pd.DataFrame,
                    categories: pd.DataFrame, *, info: dict | None = None,
                    attributes: list[dict] | None = None) -> int:
    """Write masks as COCO instances JSON (atomically, compact). Returns the number of annotations.

    ``attributes``: one dict per mask row, written as the annotation's ``attributes``
    (the field CVAT's and Datumaro's COCO importers read)."""
    def col(name: str, t) -> list:  # one column as Python numbers, without a row object per mask
        return masks[name].to_numpy(t).tolist()

    anns = [{"id": i, "image_id": img, "category_id": cat, "segmentation": {"size": [h, w], "counts": counts},
             "area": area, "bbox": [x, y, bw, bh], "iscrowd": 0, "score": score}
            for i, img, cat, counts, h, w, area, x, y, bw, bh, score in zip(
                col("mask_id", np.int64), col("image_id", np.int64), col("category_id", np.int64),
                [str(c) for c in masks["rle"].tolist()], col("height", np.int64), col("width", np.int64),
                col("area", np.float64), col("bbox_x", np.float64), col("bbox_y", np.float64),
                col("bbox_w", np.float64), col("bbox_h", np.float64), col("score", np.float64))]
    if attributes is not None:
        for a, attr in zip(anns, attributes):
            a["attributes"] = attr
    out = {
        "info": info or {"description": "crowdprop export"},
        "images": images.to_dict("records"),
        "categories": categories.to_dict("records"),
        "annotations": anns,
    }
    import msgspec

    from ..io import atomic_write_bytes

    # msgspec: the same JSON as json.dumps without its spaces, in a sixth of the time (9.3 s
    # against 1.7 s for 1M masks); a missing float (NaN) is written as null, which JSON has.
    atomic_write_bytes(path, msgspec.json.encode(out))
    return len(anns)
