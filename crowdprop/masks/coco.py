"""COCO JSON in and out: detector results, instances ground truth, exported annotations.

Readers validate every record and raise :class:`crowdprop.errors.InputError`
naming the file, the record (its index, and its id where it has one) and the
field. Nothing is written by this module except :func:`write_instances`.
"""
from __future__ import annotations

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
from . import rle

log = logging.getLogger(__name__)

PRED_IOU_FIELDS = ("pred_iou", "predicted_iou", "mask_iou")


@dataclass
class GroundTruth:
    """COCO instances ground truth, reduced to what crowdprop needs."""

    path: str
    images: pd.DataFrame  # id, file_name, height, width, coco_url
    categories: pd.DataFrame  # id, name, supercategory
    annotations: pd.DataFrame  # id, image_id, category_id, iscrowd, rle, height, width, area

    def image_sizes(self) -> dict[int, tuple[int, int]]:
        return {int(i): (int(h), int(w)) for i, h, w in self.images[["id", "height", "width"]].itertuples(index=False)}


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


def _int_field(path, i, r, field) -> int:
    if field not in r:
        raise InputError(path, _rec(i, r), field, "missing")
    v = r[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise InputError(path, _rec(i, r), field, f"expected an integer, got {v!r}")
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


def _segmentation(path, i, r, sizes: dict[int, tuple[int, int]] | None, image_id: int) -> tuple[str, int, int]:
    """Validate one ``segmentation`` and return (compressed counts, h, w)."""
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
            try:
                n = rle.compressed_length(counts, h, w)
            except (ValueError, UnicodeEncodeError) as e:
                raise InputError(path, _rec(i, r), "segmentation.counts", f"bad compressed RLE: {e}") from None
            if n != h * w:
                raise InputError(path, _rec(i, r), "segmentation.counts",
                                 f"RLE covers {n} pixels, size {h}x{w} has {h * w}")
            return counts, h, w
        raise InputError(path, _rec(i, r), "segmentation.counts", "expected a string or a list of integers")
    if isinstance(seg, list):
        if known is None:
            raise InputError(path, _rec(i, r), "segmentation",
                             "polygon masks need the image size: pass ground truth (--gt) that lists this image")
        if len(seg) == 0:
            raise InputError(path, _rec(i, r), "segmentation", "empty polygon list")
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
                raise InputError(path, _rec(i, r), f"segmentation[{j}]", "polygon must be a list of finite numbers")
            if len(poly) % 2:
                raise InputError(path, _rec(i, r), f"segmentation[{j}]", "polygon has an odd number of coordinates")
            if len(poly) < 6:
                raise InputError(path, _rec(i, r), f"segmentation[{j}]",
                                 f"polygon has {len(poly) // 2} points, needs >= 3")
        h, w = known
        return rle.from_polygons(seg, h, w), h, w
    raise InputError(path, _rec(i, r), "segmentation", f"expected an RLE object or polygons, got {type(seg).__name__}")


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read and validate COCO instances ground truth."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, None, None, "expected a COCO instances object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, None, key, "missing or not a list")
    images = []
    seen: set[int] = set()
    for i, im in enumerate(data["images"]):
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
    cats = []
    seen_c: set[int] = set()
    for i, c in enumerate(data["categories"]):
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
    sizes = {r["id"]: (r["height"], r["width"]) for r in images}
    anns = []
    seen_a: set[int] = set()
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise InputError(path, f"annotations[{i}]", None, "expected an object")
        rec = f"annotations[{i}]" + (f" (id={a['id']!r})" if "id" in a else "")
        aid = _int_field(path, i, a, "id")
        if aid in seen_a:
            raise InputError(path, rec, "id", "duplicate annotation id")
        seen_a.add(aid)
        iid = _int_field(path, i, a, "image_id")
        if iid not in sizes:
            raise InputError(path, rec, "image_id", f"image {iid} is not in 'images'")
        cid = _int_field(path, i, a, "category_id")
        if cid not in seen_c:
            raise InputError(path, rec, "category_id", f"category {cid} is not in 'categories'")
        try:
            counts, h, w = _segmentation(path, i, a, sizes, iid)
        except InputError as e:
            e.record = rec
            raise InputError(e.file, rec, e.field, e.message) from None
        anns.append({"id": aid, "image_id": iid, "category_id": cid, "iscrowd": int(bool(a.get("iscrowd", 0))),
                     "rle": counts, "height": h, "width": w})
    ann_df = pd.DataFrame(anns, columns=["id", "image_id", "category_id", "iscrowd", "rle", "height", "width"])
    ann_df["area"] = rle.area(ann_df["rle"].tolist(), ann_df["height"].tolist(), ann_df["width"].tolist())
    return GroundTruth(
        path=str(path),
        images=pd.DataFrame(images, columns=["id", "file_name", "height", "width", "coco_url"]),
        categories=pd.DataFrame(cats, columns=["id", "name", "supercategory"]),
        annotations=ann_df,
    )


def load_predictions(path: str | os.PathLike, gt: GroundTruth | None = None, *,
                     progress: bool | None = None) -> pd.DataFrame:
    """Read and validate COCO results (a JSON list) into the masks table.

    Each record needs ``image_id``, ``category_id``, ``segmentation`` (RLE or
    polygons) and ``score``; ``id`` and a predicted-IoU field
    (one of :data:`PRED_IOU_FIELDS`) are optional. With ground truth, image and
    category ids must exist there and RLE sizes must match the image.
    ``progress``: None shows a bar on a terminal only, False never.
    """
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise InputError(path, None, None, "expected a JSON list of COCO results")
    if not data:
        raise InputError(path, None, None, "no predictions in the file")
    sizes = gt.image_sizes() if gt is not None else None
    cats = set(gt.categories["id"].tolist()) if gt is not None else None
    rows = []
    ids_seen: dict[int, int] = {}
    has_ids = None
    from tqdm.auto import tqdm

    for i, r in enumerate(tqdm(data, desc="reading predictions", unit="mask", leave=False,
                               disable=None if progress is not False else True)):
        if not isinstance(r, dict):
            raise InputError(path, f"record {i}", None, "expected an object")
        if has_ids is None:
            has_ids = "id" in r
        if has_ids != ("id" in r):
            raise InputError(path, _rec(i, r), "id", "either every record has an id or none does")
        mid = _int_field(path, i, r, "id") if has_ids else i
        if mid in ids_seen:
            raise InputError(path, _rec(i, r), "id", f"duplicate id (also record {ids_seen[mid]})")
        ids_seen[mid] = i
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
        counts, h, w = _segmentation(path, i, r, sizes, iid)
        rows.append((mid, iid, cid, score, piou, h, w, counts))
    df = pd.DataFrame(rows, columns=["mask_id", "image_id", "category_id", "score", "pred_iou", "height", "width", "rle"])
    df["area"] = rle.area(df["rle"].tolist(), df["height"].tolist(), df["width"].tolist())
    empty = np.flatnonzero(df["area"].to_numpy() == 0)
    if len(empty):
        i = int(empty[0])
        raise InputError(path, _rec(i, data[i]), "segmentation", "empty mask (0 pixels)")
    boxes = rle.bbox(df["rle"].tolist(), df["height"].tolist(), df["width"].tolist())
    df["bbox_x"], df["bbox_y"], df["bbox_w"], df["bbox_h"] = boxes.T
    if gt is not None:
        gi, ga = match_ground_truth(df, gt, progress=progress)
        df["gt_iou"] = gi
        df["gt_ann_id"] = ga
    log.info("read %d predictions over %d classes from %s", len(df), df["category_id"].nunique(), path)
    return coerce_masks(df)


def match_ground_truth(masks: pd.DataFrame, gt: GroundTruth, *,
                       progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of each mask with a same-class, non-crowd ground-truth instance.

    ``progress``: None shows a bar on a terminal only, False never."""
    from tqdm.auto import tqdm

    best = np.zeros(len(masks), dtype=np.float64)
    best_id = np.full(len(masks), -1, dtype=np.int64)
    ann = gt.annotations[gt.annotations["iscrowd"] == 0]
    groups = dict(tuple(ann.groupby(["image_id", "category_id"])))
    groups_of_masks = masks.groupby(["image_id", "category_id"]).indices
    for (iid, cid), idx in tqdm(groups_of_masks.items(), total=len(groups_of_masks), desc="matching ground truth",
                                unit="group", leave=False, disable=None if progress is not False else True):
        g = groups.get((iid, cid))
        if g is None or len(g) == 0:
            continue
        h, w = int(g["height"].iloc[0]), int(g["width"].iloc[0])
        m = rle.iou_matrix(masks["rle"].iloc[idx].tolist(), g["rle"].tolist(), h, w)
        j = m.argmax(axis=1)
        best[idx] = m[np.arange(len(idx)), j]
        best_id[idx] = g["id"].to_numpy()[j]
    return best, best_id


def write_instances(path: str | os.PathLike, masks: pd.DataFrame, images: pd.DataFrame,
                    categories: pd.DataFrame, *, info: dict | None = None) -> int:
    """Write masks as COCO instances JSON (atomically). Returns the number of annotations."""
    anns = []
    for k, r in enumerate(masks.itertuples(index=False), start=1):
        anns.append({
            "id": int(r.mask_id),
            "image_id": int(r.image_id),
            "category_id": int(r.category_id),
            "segmentation": rle.to_json(r.rle, r.height, r.width),
            "area": float(r.area),
            "bbox": [float(r.bbox_x), float(r.bbox_y), float(r.bbox_w), float(r.bbox_h)],
            "iscrowd": 0,
            "score": float(r.score),
        })
    out = {
        "info": info or {"description": "crowdprop export"},
        "images": images.to_dict("records"),
        "categories": categories.to_dict("records"),
        "annotations": anns,
    }
    from ..io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(out).encode("utf-8"))
    return len(anns)
