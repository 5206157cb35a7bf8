"""Predictions in the formats detectors and segmenters write, read through the COCO loader.

:func:`read_predictions` is what ``crowdprop init/replay --predictions`` call. It tells
the format from the path and the options, turns anything that is not COCO results into
COCO results records, and hands those to :func:`crowdprop.masks.coco.load_predictions`,
so every format is validated by the same checks. An error the loader finds in a
converted record is reported against the record it came from (its file, its place in
that file, the field), one line, like any other :class:`~crowdprop.errors.InputError`.

Formats
-------
COCO results JSON
    A list of ``{image_id, category_id, segmentation, score}`` (or an object whose
    ``annotations`` is that list). MMDetection's ``<prefix>.segm.json``
    (``CocoMetric(format_only=True, outfile_prefix=...)``) and detectron2's
    ``coco_instances_results.json`` are this format as written (the ``bbox`` they carry is
    ignored; crowdprop computes boxes from the masks).
detectron2 ``instances_predictions.pth``
    What ``COCOEvaluator`` saves with ``torch.save``: a list of
    ``{image_id, instances: [{image_id, category_id, bbox, score, segmentation}]}`` with
    compressed RLE ``counts`` as text. Loaded with ``torch.load(weights_only=True)``, which
    rebuilds plain containers, numbers, text and tensors only and refuses any other pickled
    object. ``category_id`` there is detectron2's *contiguous* class index; with ground
    truth it is mapped to the ground truth's category ids in ascending order, as
    detectron2's ``load_coco_json`` numbers them. Needs torch (``crowdprop[detect]``).
Segment Anything (``scripts/amg.py --convert-to-rle``)
    One ``<image name>.json`` per image (a folder of them, or one file): a list of
    ``{segmentation (RLE), area, bbox, predicted_iou, point_coords, stability_score,
    crop_box}``. There is no class: ``category`` names one class for every mask, or
    ``category_map`` names one per image. The image is the file's name without
    ``.json``: with ground truth, the image whose ``file_name`` has that stem; without, the
    stem read as an integer image id (COCO's ``000000397133``), else images numbered 1, 2,
    ... in file-name order. ``stability_score`` becomes the mask's ``score`` and
    ``predicted_iou`` (clipped to [0, 1]; SAM's IoU head is not bounded) its predicted IoU.

Mask order (which ``--features .npy`` rows follow): detectron2, images then instances as
stored; Segment Anything, files in name order, then masks as stored.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .coco import GroundTruth, _load_json, load_predictions

log = logging.getLogger(__name__)

COCO, DETECTRON2, SAM = "coco", "detectron2", "sam"
TORCH_SUFFIXES = (".pth", ".pt")


@dataclass
class _Converted:
    """COCO results records, and where each came from (file, record label) for error messages."""

    records: list[dict]
    where: list[tuple[str, str]]
    categories: pd.DataFrame | None = None  # names the format supplies (Segment Anything, no ground truth)


def predictions_format(path: str | os.PathLike, *, category: str | None = None,
                       category_map: str | os.PathLike | None = None) -> str:
    """Which reader ``path`` needs: :data:`COCO`, :data:`DETECTRON2` or :data:`SAM`."""
    p = Path(path)
    if category is not None or category_map is not None:
        if p.suffix.lower() in TORCH_SUFFIXES:
            raise InputError(path, None, "--category", "applies to Segment Anything output only "
                                                       "(detectron2 predictions carry their classes)")
        return SAM
    if p.is_dir():
        raise InputError(path, None, "--category", "a folder of Segment Anything masks (amg.py --convert-to-rle) "
                                                   "has no classes: pass --category NAME or --category-map FILE")
    if p.suffix.lower() in TORCH_SUFFIXES:
        return DETECTRON2
    return COCO


def read_predictions(path: str | os.PathLike, gt: GroundTruth | None = None, *, category: str | None = None,
                     category_map: str | os.PathLike | None = None,
                     progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The masks table from predictions in any supported format (see the module docstring).

    Returns ``(masks, categories)``: ``categories`` (``id, name, supercategory``) when the
    format names its classes and there is no ground truth to name them, else None."""
    fmt = predictions_format(path, category=category, category_map=category_map)
    if fmt == COCO:
        try:
            return load_predictions(path, gt, progress=progress), None
        except InputError as e:
            raise _with_hint(path, e) from None
    conv = (_detectron2_records(path, gt) if fmt == DETECTRON2
            else _sam_records(path, gt, category, category_map))
    if not conv.records:
        raise InputError(path, None, None, "no predictions in the file" if fmt == DETECTRON2
                         else "no masks in the Segment Anything output")
    masks = _load_converted(path, conv, gt, progress)
    log.info("read %d %s predictions from %s", len(masks), fmt, path)
    return masks, conv.categories


# ----------------------------------------------------------------------------- COCO results, with hints


def _with_hint(path, e: InputError) -> InputError:
    """A COCO loader error, with what to do when the file is a sibling of the right one."""
    name = Path(path).name.lower()
    if e.field == "segmentation" and e.message == "missing" and name.endswith(".bbox.json"):
        return InputError(e.file, e.record, e.field, "missing: this is MMDetection's box file; "
                                                     "pass the .segm.json written beside it")
    if e.field in ("image_id", "category_id") and e.message == "missing" and _looks_like_sam(path):
        return InputError(e.file, e.record, e.field, "missing: this looks like Segment Anything output "
                                                     "(amg.py --convert-to-rle); pass --category NAME or "
                                                     "--category-map FILE")
    return e


def _looks_like_sam(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return b'"stability_score"' in head and b'"image_id"' not in head


# ----------------------------------------------------------------------------- converted records -> loader


_RECORD = re.compile(r"^record (\d+)")


def _load_converted(path, conv: _Converted, gt: GroundTruth | None, progress) -> pd.DataFrame:
    """Validate converted records with the COCO loader (through a temporary COCO results file,
    outside any run directory); its errors are re-addressed to the records' sources."""
    fd, tmp = tempfile.mkstemp(prefix="crowdprop-predictions-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(conv.records, f)
        return load_predictions(tmp, gt, progress=progress)
    except InputError as e:
        m = _RECORD.match(str(e.record)) if e.record is not None else None
        if m and int(m.group(1)) < len(conv.where):
            file, rec = conv.where[int(m.group(1))]
            raise InputError(file, rec, e.field, e.message) from None
        raise InputError(path if e.file == tmp else e.file, e.record, e.field, e.message) from None
    finally:
        os.unlink(tmp)


# ----------------------------------------------------------------------------- detectron2 .pth


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise InputError(path, None, None, "reading detectron2's .pth predictions needs torch: "
                                           "pip install 'crowdprop[detect]'") from None
    if not Path(path).is_file():
        raise InputError(path, None, None, "file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(path, None, None, "not a torch file of plain predictions (weights_only=True refuses "
                                           f"pickled objects): {first[:200]}") from None


def _plain(v: Any) -> Any:
    """A 0-d tensor or numpy scalar as a Python number; anything else unchanged."""
    item = getattr(v, "item", None)
    if item is not None and getattr(v, "ndim", None) == 0:
        return item()
    return v


def _int_value(v) -> int | None:
    v = _plain(v)
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None


def _detectron2_records(path, gt: GroundTruth | None) -> _Converted:
    data = _torch_load(path)
    if not isinstance(data, list):
        raise InputError(path, None, None, "expected detectron2's list of per-image predictions "
                                           f"({{image_id, instances}}), got {type(data).__name__}")
    cat_ids = np.sort(gt.categories["id"].to_numpy(np.int64)) if gt is not None else None
    records, where = [], []
    for i, pred in enumerate(data):
        iid, rec0, insts = _detectron2_image(path, i, pred)
        for j, inst in enumerate(insts):
            rec = f"{rec0} instances[{j}]"
            records.append(_detectron2_instance(path, rec, iid, inst, cat_ids))
            where.append((str(path), rec))
    return _Converted(records, where)


def _detectron2_image(path, i: int, pred) -> tuple[int, str, list]:
    """``(image id, record label, instances)`` of one image's entry."""
    rec = f"predictions[{i}]"
    if not isinstance(pred, dict):
        raise InputError(path, rec, None, "expected an object {image_id, instances}")
    iid = _int_value(pred.get("image_id"))
    if iid is None:
        raise InputError(path, rec, "image_id", "missing" if "image_id" not in pred else
                         f"expected an integer image id, got {pred['image_id']!r}")
    rec = f"predictions[{i}] (image_id={iid})"
    insts = pred.get("instances")
    if not isinstance(insts, list):
        raise InputError(path, rec, "instances", "missing (box proposals only? crowdprop needs masks)"
                         if "instances" not in pred else f"expected a list, got {type(insts).__name__}")
    return iid, rec, insts


def _detectron2_instance(path, rec: str, iid: int, inst, cat_ids: np.ndarray | None) -> dict:
    """One instance as a COCO results record, its contiguous class index mapped to ``cat_ids``."""
    if not isinstance(inst, dict):
        raise InputError(path, rec, None, "expected an object")
    if "segmentation" not in inst:
        raise InputError(path, rec, "segmentation", "missing (was the model run with MODEL.MASK_ON?)")
    c = _int_value(inst.get("category_id"))
    if c is None:
        raise InputError(path, rec, "category_id", f"expected an integer class index, got {inst.get('category_id')!r}")
    if cat_ids is not None:
        if not 0 <= c < len(cat_ids):
            raise InputError(path, rec, "category_id",
                             f"class index {c} is out of range: the ground truth has {len(cat_ids)} "
                             f"categories (detectron2's contiguous index 0..{len(cat_ids) - 1})")
        c = int(cat_ids[c])
    out = {"image_id": iid, "category_id": c, "segmentation": _plain_segmentation(inst["segmentation"])}
    if "score" in inst:  # else the loader reports it missing, against this record
        out["score"] = _plain(inst["score"])
    return out


def _plain_segmentation(seg):
    """detectron2 keeps ``counts`` as text already; bytes (an older pickle) are decoded."""
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        seg = dict(seg, counts=seg["counts"].decode("ascii", "replace"))
    if isinstance(seg, dict) and "size" in seg:
        seg = dict(seg, size=[_plain(s) for s in seg["size"]] if isinstance(seg["size"], (list, tuple))
                   else seg["size"])
    return seg


# ----------------------------------------------------------------------------- Segment Anything


def _stem(name: str) -> str:
    """A file name without folder and extension (``a/b/000123.jpg`` -> ``000123``)."""
    return Path(str(name).replace("\\", "/")).stem


def _sam_files(path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".json" and f.is_file())
        if not files:
            pngs = any(d.is_dir() and (d / "metadata.csv").exists() for d in p.iterdir())
            raise InputError(path, None, None, "no .json files" + (
                ": these are amg.py's PNG folders; run it with --convert-to-rle" if pngs else ""))
        return files
    if not p.exists():
        raise InputError(path, None, None, "file not found")
    return [p]


def read_category_map(path) -> dict[str, str]:
    """``{image stem: category name}`` from a JSON object ``{"image": "name"}`` or a CSV with
    columns ``image,category`` (image: a file name, with or without extension)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        try:
            with open(p, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise InputError(path, None, None, "file not found") from None
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(path, None, None, f"not a CSV file: {e}") from None
        if not rows or not {"image", "category"} <= set(rows[0]):
            raise InputError(path, None, "image,category", "expected a CSV with columns image,category")
        pairs = [(i + 2, r["image"], r["category"]) for i, r in enumerate(rows)]
        label = "line {}"
    else:
        data = _load_json(p)
        if not isinstance(data, dict):
            raise InputError(path, None, None, 'expected a JSON object {"image file name": "category name"}')
        pairs = [(k, k, v) for k, v in data.items()]
        label = "image {!r}"
    out: dict[str, str] = {}
    for key, image, name in pairs:
        if not isinstance(image, str) or not image.strip():
            raise InputError(path, label.format(key), "image", "empty image name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(path, label.format(key), "category", f"expected a class name, got {name!r}")
        for k in {image.strip(), _stem(image.strip())}:  # "a.b" may be a stem or a name with extension
            if out.get(k, name.strip()) != name.strip():
                raise InputError(path, label.format(key), "image", f"image {k!r} is mapped to two classes")
            out[k] = name.strip()
    return out


def _sam_images(path, files: list[Path], gt: GroundTruth | None) -> list[int]:
    stems = [f.stem for f in files]
    if gt is not None:
        by_stem: dict[str, list[int]] = {}
        for iid, name in zip(gt.images["id"].tolist(), gt.images["file_name"].astype(str).tolist()):
            by_stem.setdefault(_stem(name), []).append(int(iid))
        ids = []
        for f, s in zip(files, stems):
            found = by_stem.get(s, [])
            if len(found) != 1:
                raise InputError(f, None, "file name",
                                 f"no image named {s!r} in the ground truth ({gt.path})" if not found else
                                 f"{len(found)} ground-truth images are named {s!r} (ids {found[:5]})")
            ids.append(found[0])
        return ids
    if all(s.isdigit() for s in stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def _sam_categories(path, files: list[Path], gt: GroundTruth | None, category: str | None,
                    category_map) -> tuple[list[int], pd.DataFrame | None]:
    """The category id of each file, and the categories table when there is no ground truth."""
    if category is not None and category_map is not None:
        raise InputError("command line", None, "--category/--category-map", "give one of them, not both")
    if category is not None:
        if not category.strip():
            raise InputError("command line", None, "--category", "empty class name")
        names = [category.strip()] * len(files)
        src, rec, field = "command line", None, "--category"
    else:
        mapping = read_category_map(category_map)
        names = []
        for f in files:
            if f.stem not in mapping:
                raise InputError(category_map, None, "image", f"no class for image {f.stem!r} ({f})")
            names.append(mapping[f.stem])
        src, rec, field = str(category_map), None, "category"
    if gt is not None:
        by_name = dict(zip(gt.categories["name"].astype(str), gt.categories["id"].astype(int)))
        missing = next((n for n in names if n not in by_name), None)
        if missing is not None:
            raise InputError(src, rec, field, f"class {missing!r} is not in the ground truth's categories")
        return [int(by_name[n]) for n in names], None
    uniq = sorted(set(names))
    ids = {n: k for k, n in enumerate(uniq, start=1)}
    cats = pd.DataFrame({"id": np.arange(1, len(uniq) + 1, dtype=np.int64), "name": uniq, "supercategory": ""})
    return [ids[n] for n in names], cats


def _number(file, rec, m: dict, field: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if field not in m:
        raise InputError(file, rec, field, "missing")
    v = m[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(file, rec, field, f"expected a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InputError(file, rec, field, f"expected a number in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def _sam_records(path, gt: GroundTruth | None, category: str | None, category_map) -> _Converted:
    files = _sam_files(path)
    image_ids = _sam_images(path, files, gt)
    cat_ids, cats = _sam_categories(path, files, gt, category, category_map)
    records, where = [], []
    for f, iid, cid in zip(files, image_ids, cat_ids):
        try:
            data = _load_json(f)
        except RecursionError:
            raise InputError(f, None, None, "nested too deeply (thousands of levels of [ or {)") from None
        if not isinstance(data, list):
            raise InputError(f, None, None, "expected amg.py's list of masks (run it with --convert-to-rle)")
        for j, m in enumerate(data):
            rec = f"record {j}"
            if not isinstance(m, dict):
                raise InputError(f, rec, None, "expected an object")
            seg = m.get("segmentation")
            if seg is None:
                raise InputError(f, rec, "segmentation", "missing")
            if not isinstance(seg, dict):
                raise InputError(f, rec, "segmentation", "expected an RLE object {size, counts} "
                                                         "(amg.py --convert-to-rle)")
            stability = _number(f, rec, m, "stability_score", lo=0.0, hi=1.0)
            piou = _number(f, rec, m, "predicted_iou")
            records.append({"image_id": iid, "category_id": cid, "segmentation": seg, "score": stability,
                            "pred_iou": min(max(piou, 0.0), 1.0)})
            where.append((str(f), rec))
    return _Converted(records, where, cats)
