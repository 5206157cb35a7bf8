"""A K-times larger run directory for timing rounds, made from one that has not run a round yet.

    python benchmarks/tile_rundir.py SRC_RUN_DIR DEST_RUN_DIR --copies 10

``crowdprop init`` of ten million masks takes ten minutes or more and its synthetic set an hour
to write; the rounds of a 10M-mask campaign can be timed on ten copies of a 1M-mask run
directory instead (``crowdprop synth --masks 1000000 --classes 80`` then ``crowdprop init``, as
``bench_scale.py`` does). Copy ``k`` (0-based) of every table is the source's with its ids
moved past the copies before it, so each copy is its own set of images, classes, ground truth
and masks:

- ``masks.parquet``: ``mask_id``, ``image_id``, ``category_id`` and ``gt_ann_id`` (except -1)
  shifted by ``k`` times one more than their largest value in the source;
- ``images.parquet`` ``id`` likewise, ``file_name`` prefixed ``tile<k>/`` (k > 0);
  ``categories.parquet`` ``id`` likewise, ``name`` suffixed `` #<k>`` (k > 0): a copy's classes
  are new classes with their own trees; ``gt.parquet`` ``id``, ``image_id``, ``category_id``;
- ``golds.parquet`` and ``labels.parquet``: ``mask_row`` shifted by ``k`` times the source's
  mask count, the ids as above (labels.parquet loses its digest, so the first ``crowdprop
  run`` writes it again);
- ``trees/nodes.parquet``: ``node_id``, ``parent``, ``left``, ``right`` (except -1) by ``k``
  times the node count, ``start``/``end`` by ``k`` times the mask count, ``category_id`` as
  above; ``trees/order.parquet``: ``pos``, ``row`` and ``mask_id`` likewise;
- ``features.npy`` (when there is one): the source's rows repeated ``K`` times;
- ``config.json`` and ``campaign.json`` copied as they are.

Each table is written one copy at a time (memory: one copy of the largest table). The masks
of different copies are identical, so questions and answers repeat across copies: the work of
a round, not its outcome, is what such a directory measures.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SENTINEL = {"parent", "left", "right", "gt_ann_id"}
"""Columns where a negative value means 'none' and stays as it is."""


def _tile(src: Path, dst: Path, name: str, k_copies: int, shifts: dict[str, int],
          suffix: dict[str, str] | None = None, drop_meta: tuple[bytes, ...] = ()) -> int:
    """Write ``k_copies`` copies of ``src/name`` to ``dst/name``, column ``c`` of copy ``k``
    shifted by ``k * shifts[c]``; string columns in ``suffix`` get ``fmt.format(k=k)`` added
    (``{k}`` before the value when the format ends with ``/``). Returns the source's rows."""
    t = pq.read_table(src / name)
    meta = {a: b for a, b in (t.schema.metadata or {}).items() if a not in drop_meta}
    schema = t.schema.with_metadata(meta)
    (dst / name).parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(dst / name, schema, compression="zstd") as w:
        for k in range(k_copies):
            cols = []
            for f in t.schema:
                c = t.column(f.name)
                if k and f.name in shifts:
                    moved = pc.add(c, pa.scalar(k * shifts[f.name], f.type))
                    c = pc.if_else(pc.less(c, 0), c, moved) if f.name in SENTINEL else moved
                if k and suffix and f.name in suffix:
                    fmt = suffix[f.name].format(k=k)
                    parts = [pa.scalar(fmt), c] if fmt.endswith("/") else [c, pa.scalar(fmt)]
                    c = pc.if_else(pc.is_null(c), c, pc.binary_join_element_wise(*parts, ""))
                cols.append(c.cast(f.type))
            w.write_table(pa.table(cols, schema=schema))
    return t.num_rows


def _span(path: Path, col: str) -> int:
    """One more than the largest value of ``col`` (0 for an empty table)."""
    v = pc.max(pq.read_table(path, columns=[col]).column(col)).as_py()
    return 0 if v is None else int(v) + 1


def tile_run_dir(src: Path, dst: Path, copies: int) -> dict:
    if (src / "state").exists() and any((src / "state").iterdir()):
        raise SystemExit(f"{src}: has committed rounds; tile a run directory before its first round")
    if not (src / "masks.parquet").exists():
        raise SystemExit(f"{src}: not a run directory (no masks.parquet)")
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst}: exists and is not empty")
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "campaign.json"):
        shutil.copy(src / f, dst / f)
    n = pq.read_metadata(src / "masks.parquet").num_rows
    n_nodes = pq.read_metadata(src / "trees/nodes.parquet").num_rows
    mask_id = _span(src / "masks.parquet", "mask_id")
    image = _span(src / "images.parquet", "id")
    cat = _span(src / "categories.parquet", "id")
    gt = _span(src / "gt.parquet", "id") if (src / "gt.parquet").exists() else 0
    ids = {"mask_id": mask_id, "image_id": image, "category_id": cat}
    _tile(src, dst, "masks.parquet", copies, {**ids, "gt_ann_id": gt})
    _tile(src, dst, "images.parquet", copies, {"id": image}, suffix={"file_name": "tile{k}/"})
    _tile(src, dst, "categories.parquet", copies, {"id": cat}, suffix={"name": " #{k}"})
    if (src / "gt.parquet").exists():
        _tile(src, dst, "gt.parquet", copies, {"id": gt, "image_id": image, "category_id": cat})
    _tile(src, dst, "golds.parquet", copies, {"mask_row": n, "mask_id": mask_id})
    if (src / "labels.parquet").exists():
        _tile(src, dst, "labels.parquet", copies, {"mask_row": n, **ids},
              drop_meta=(b"crowdprop.labels_digest",))
    _tile(src, dst, "trees/nodes.parquet", copies,
          {"node_id": n_nodes, "parent": n_nodes, "left": n_nodes, "right": n_nodes, "start": n, "end": n,
           "category_id": cat})
    _tile(src, dst, "trees/order.parquet", copies, {"pos": n, "row": n, "mask_id": mask_id})
    if (src / "features.npy").exists():
        feats = np.load(src / "features.npy", mmap_mode="r")
        out = np.lib.format.open_memmap(dst / "features.npy", mode="w+", dtype=feats.dtype,
                                        shape=(copies * feats.shape[0], *feats.shape[1:]))
        for k in range(copies):
            out[k * len(feats):(k + 1) * len(feats)] = feats
        out.flush()
        del out
    return {"masks": n * copies, "nodes": n_nodes * copies}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="run directory made by crowdprop init, no round run yet")
    ap.add_argument("dst", type=Path, help="new run directory (must not exist or be empty)")
    ap.add_argument("--copies", type=int, default=10, help="how many copies (default 10)")
    a = ap.parse_args(argv)
    if a.copies < 1:
        raise SystemExit("--copies must be at least 1")
    out = tile_run_dir(a.src, a.dst, a.copies)
    print(f"{a.dst}: {out['masks']:,} masks, {out['nodes']:,} nodes ({a.copies} copies of {a.src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
