"""Detection results on disk: incremental parts, resume, and the final merge.

Layout of ``RUN_DIR`` written by ``crowdprop detect``::

    detect.json                      settings the detections depend on (checked on resume)
    projection.npy                   (12544, 512) float32 feature projection
    detections/part-NNNNNNNNN.masks.parquet    one row per detection (PART_MASK_COLUMNS)
    detections/part-NNNNNNNNN.features.npy     (n, 512) float32, rows aligned with the masks part
    detections/part-NNNNNNNNN.images.parquet   file_name, height, width of every image in the part
    masks.parquet        merged, exactly crowdprop.schema.MASK_COLUMNS
    features.npy         (n_masks, 512) float32, row i for masks.parquet row i
    images.parquet       id, file_name, height, width, coco_url
    categories.parquet   id, name, supercategory

``NNNNNNNNN`` is the position (in sorted file order) of the part's first image.
A part is complete once its ``images`` file exists: it is written last, after the
masks and features, each atomically. Images listed in complete parts are done and
skipped on the next run; files of incomplete parts (a killed run) are removed
before detection starts. Parts hold file names, not ids: ids are given at the
merge from the current sorted listing, so adding images to the folder or
raising ``--limit`` and running again only detects the new images.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StateError
from ..io import atomic_path, atomic_write_bytes, read_parquet, write_parquet
from ..masks import rle as _rle
from ..schema import MASK_COLUMNS, coerce_masks
from .projection import FEATURE_DIM

log = logging.getLogger(__name__)

__all__ = ["PARTS_DIR", "PART_MASK_COLUMNS", "write_part", "clean_incomplete_parts", "completed_parts",
           "done_images", "merge_parts", "MergeSummary"]

PARTS_DIR = "detections"

PART_MASK_COLUMNS: dict[str, str] = {
    "file_name": "object",
    "category_id": "int64",
    "score": "float64",
    "pred_iou": "float64",
    "height": "int32",
    "width": "int32",
    "rle": "object",
    "area": "float64",
    "bbox_x": "float64",  # box of the binarized mask (COCO x, y, w, h)
    "bbox_y": "float64",
    "bbox_w": "float64",
    "bbox_h": "float64",
    "det_x": "float64",  # the detector's box (COCO x, y, w, h)
    "det_y": "float64",
    "det_w": "float64",
    "det_h": "float64",
}

_MASKS_SCHEMA = pa.schema([(c, pa.string() if t == "object" else pa.from_numpy_dtype(np.dtype(t)))
                           for c, t in MASK_COLUMNS.items()])


def _stem(first_index: int) -> str:
    return f"part-{first_index:09d}"


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def write_part(parts_dir: str | Path, first_index: int, file_names: Sequence[str], detections: Sequence) -> int:
    """Write the detections of some images as one complete part.

    Parameters
    ----------
    parts_dir : path
        ``RUN_DIR/detections``.
    first_index : int
        Position of ``file_names[0]`` in the sorted listing (names the part).
    file_names : sequence of str, length m
    detections : sequence of :class:`crowdprop.detect.model.Detections`, length m

    Returns
    -------
    int
        Number of mask rows written.
    """
    parts_dir = Path(parts_dir)
    stem = _stem(first_index)
    rows: dict[str, list] = {c: [] for c in PART_MASK_COLUMNS}
    feats = []
    for name, det in zip(file_names, detections):
        n = len(det)
        if n == 0:
            continue
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(n, 4)
        mbox = _rle.bbox(det.rle, [det.height] * n, [det.width] * n)
        rows["file_name"] += [name] * n
        rows["category_id"] += list(det.labels)
        rows["score"] += list(det.scores)
        rows["pred_iou"] += list(det.pred_iou)
        rows["height"] += [det.height] * n
        rows["width"] += [det.width] * n
        rows["rle"] += list(det.rle)
        rows["area"] += list(_rle.area(det.rle, [det.height] * n, [det.width] * n))
        for j, c in enumerate(("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
            rows[c] += list(mbox[:, j])
        rows["det_x"] += list(boxes[:, 0])
        rows["det_y"] += list(boxes[:, 1])
        rows["det_w"] += list(boxes[:, 2] - boxes[:, 0])
        rows["det_h"] += list(boxes[:, 3] - boxes[:, 1])
        feats.append(np.asarray(det.features, dtype=np.float32).reshape(n, FEATURE_DIM))
    masks = pd.DataFrame({c: pd.Series(v, dtype=PART_MASK_COLUMNS[c]) for c, v in rows.items()})
    features = np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM), np.float32)
    images = pd.DataFrame({
        "file_name": pd.Series(list(file_names), dtype="object"),
        "height": pd.Series([d.height for d in detections], dtype="int32"),
        "width": pd.Series([d.width for d in detections], dtype="int32"),
    })
    atomic_write_bytes(parts_dir / f"{stem}.features.npy", _npy_bytes(features))
    write_parquet(parts_dir / f"{stem}.masks.parquet", masks)
    write_parquet(parts_dir / f"{stem}.images.parquet", images)  # last: marks the part complete
    return len(masks)


def completed_parts(parts_dir: str | Path) -> list[str]:
    """Stems (``part-NNNNNNNNN``) of the complete parts, sorted."""
    parts_dir = Path(parts_dir)
    if not parts_dir.is_dir():
        return []
    return sorted(p.name[: -len(".images.parquet")] for p in parts_dir.glob("part-*.images.parquet"))


def clean_incomplete_parts(parts_dir: str | Path) -> int:
    """Remove files of parts without an ``images`` file (and stray temp files); return how many."""
    parts_dir = Path(parts_dir)
    if not parts_dir.is_dir():
        return 0
    done = set(completed_parts(parts_dir))
    removed = 0
    for p in parts_dir.iterdir():
        stem = p.name.split(".", 1)[0]
        if (p.name.startswith(".") and p.name.endswith(".tmp")) or (p.name.startswith("part-") and stem not in done):
            p.unlink()
            removed += 1
    if removed:
        log.info("removed %d file(s) of unfinished parts in %s", removed, parts_dir)
    return removed


def done_images(parts_dir: str | Path) -> set[str]:
    """File names of the images recorded in complete parts."""
    parts_dir = Path(parts_dir)
    out: set[str] = set()
    for stem in completed_parts(parts_dir):
        out.update(read_parquet(parts_dir / f"{stem}.images.parquet", columns=["file_name"])["file_name"])
    return out


@dataclass
class MergeSummary:
    n_images: int
    n_masks: int


def _coco_record(image_id: int, r) -> dict:
    return {
        "image_id": int(image_id),
        "category_id": int(r.category_id),
        "segmentation": _rle.to_json(r.rle, r.height, r.width),
        "score": float(r.score),
        "bbox": [float(r.det_x), float(r.det_y), float(r.det_w), float(r.det_h)],
        "pred_iou": float(r.pred_iou),
    }


def merge_parts(run_dir: str | Path, listing: Sequence[str], categories: pd.DataFrame, *,
                export_coco: str | Path | None = None) -> MergeSummary:
    """Merge the complete parts into the run directory's tables.

    Only images in ``listing`` are merged; ``image_id`` is the position in it and
    ``mask_id`` runs from 0 in (image_id, detector order) order. Memory stays
    bounded by one part at a time unless parts interleave in image order (the
    folder changed between runs), when everything is sorted in memory.

    Parameters
    ----------
    run_dir : path
    listing : sequence of str
        Sorted relative file names (:func:`crowdprop.detect.images.list_images`).
    categories : pandas.DataFrame
        ``id, name, supercategory``.
    export_coco : path, optional
        Also write COCO results JSON (``bbox`` is the detector's box, ``pred_iou``
        an extra field).

    Raises
    ------
    crowdprop.errors.StateError
        An image of ``listing`` is in no complete part.
    """
    run_dir = Path(run_dir)
    parts_dir = run_dir / PARTS_DIR
    ids = {f: i for i, f in enumerate(listing)}
    seen: set[str] = set()
    part_images = []  # (stem, images df with id)
    for stem in completed_parts(parts_dir):
        im = read_parquet(parts_dir / f"{stem}.images.parquet")
        im = im[im["file_name"].map(lambda f: f in ids and f not in seen)].copy()
        if len(im) == 0:
            continue
        seen.update(im["file_name"])
        im["id"] = im["file_name"].map(ids).astype("int64")
        part_images.append((stem, im))
    missing = [f for f in listing if f not in seen]
    if missing:
        raise StateError(f"{parts_dir}: {len(missing)} image(s) not detected yet, e.g. {missing[0]!r}; "
                         "run crowdprop detect again to finish")
    part_images.sort(key=lambda t: int(t[1]["id"].min()))
    images = pd.concat([im for _, im in part_images], ignore_index=True).sort_values("id", kind="stable")
    images_out = pd.DataFrame({
        "id": images["id"].to_numpy(np.int64),
        "file_name": images["file_name"].astype(str).to_numpy(),
        "height": images["height"].to_numpy(np.int32),
        "width": images["width"].to_numpy(np.int32),
        "coco_url": [""] * len(images),
    })
    ranges = [(int(im["id"].min()), int(im["id"].max())) for _, im in part_images]
    interleaved = any(a[1] >= b[0] for a, b in zip(ranges, ranges[1:]))

    def load(stem: str, keep_files: set[str]) -> tuple[pd.DataFrame, np.ndarray]:
        m = read_parquet(parts_dir / f"{stem}.masks.parquet")
        f = np.load(parts_dir / f"{stem}.features.npy", allow_pickle=False)
        if len(f) != len(m):
            raise StateError(f"{parts_dir / stem}: masks ({len(m)}) and features ({len(f)}) rows differ")
        sel = m["file_name"].isin(keep_files).to_numpy()
        m = m[sel].reset_index(drop=True)
        m["image_id"] = m["file_name"].map(ids).astype("int64")
        order = np.argsort(m["image_id"].to_numpy(), kind="stable")
        return m.iloc[order].reset_index(drop=True), f[sel][order]

    def chunks() -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        loaded = ((load(stem, set(im["file_name"]))) for stem, im in part_images)
        if not interleaved:
            yield from loaded
            return
        log.warning("parts interleave in image order (the folder changed?); merging in memory")
        ms, fs = zip(*loaded)
        m = pd.concat(ms, ignore_index=True)
        order = np.argsort(m["image_id"].to_numpy(), kind="stable")
        yield m.iloc[order].reset_index(drop=True), np.concatenate(fs)[order]

    n_masks = 0
    for stem, im in part_images:
        n_masks += int(read_parquet(parts_dir / f"{stem}.masks.parquet", columns=["file_name"])["file_name"]
                       .isin(set(im["file_name"])).sum())

    coco_file = contextlib.nullcontext(None) if export_coco is None else atomic_path(Path(export_coco))
    with atomic_path(run_dir / "masks.parquet") as t_masks, \
            atomic_path(run_dir / "features.npy") as t_feats, coco_file as t_coco:
        feats_out = (np.lib.format.open_memmap(t_feats, mode="w+", dtype=np.float32, shape=(n_masks, FEATURE_DIM))
                     if n_masks else None)
        coco = open(t_coco, "w", encoding="utf-8") if t_coco is not None else None
        writer = pq.ParquetWriter(t_masks, _MASKS_SCHEMA, compression="zstd")
        try:
            if coco is not None:
                coco.write("[")
            row = 0
            for m, f in chunks():
                n = len(m)
                if n == 0:
                    continue
                m["mask_id"] = np.arange(row, row + n, dtype=np.int64)
                table = pa.Table.from_pandas(coerce_masks(m), schema=_MASKS_SCHEMA, preserve_index=False)
                writer.write_table(table)
                if feats_out is not None:  # n_masks > 0
                    feats_out[row:row + n] = f
                if coco is not None:
                    for r in m.itertuples(index=False):
                        coco.write(("," if r.mask_id > 0 else "") + "\n"
                                   + json.dumps(_coco_record(r.image_id, r), separators=(",", ":")))
                row += n
            if coco is not None:
                coco.write("\n]\n")
            if row != n_masks:
                raise StateError(f"{parts_dir}: parts changed during the merge ({row} != {n_masks} rows)")
        finally:
            writer.close()
            if coco is not None:
                coco.close()
            if feats_out is not None:
                feats_out.flush()
                del feats_out
        if n_masks == 0:
            with open(t_feats, "wb") as fh:  # np.save(path) would append ".npy" to the temp name
                np.save(fh, np.zeros((0, FEATURE_DIM), np.float32), allow_pickle=False)
    write_parquet(run_dir / "images.parquet", images_out)
    write_parquet(run_dir / "categories.parquet", categories.reset_index(drop=True))
    return MergeSummary(n_images=len(images_out), n_masks=n_masks)
