"""Shards: the unit of work both detection engines share.

A shard is a run of consecutive images of the listing (a list of ``(index in
listing, relative file name)`` pairs); :func:`process_shard` detects on one and
writes it as one part of ``RUN_DIR/detections`` (see :mod:`crowdprop.detect.store`).
The local engine (:mod:`crowdprop.detect.pipeline`) and the Ray engine
(:mod:`crowdprop.detect.ray_engine`) both call it, so they write the same parts.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from .images import read_image
from .store import write_part

__all__ = ["Shard", "plan_shards", "process_shard"]

Shard = list  # list of (index in listing, relative file name)


def plan_shards(todo: Sequence[tuple[int, str]], images_per_part: int) -> list[Shard]:
    """Split the images to detect into consecutive shards of ``images_per_part``."""
    if images_per_part < 1:
        raise ValueError("images_per_part must be >= 1")
    todo = list(todo)
    return [todo[i:i + images_per_part] for i in range(0, len(todo), images_per_part)]


def process_shard(detector, images_dir: str | Path, parts_dir: str | Path, shard: Shard, *,
                  batch_size: int, on_batch: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Detect on one shard in batches and write it as one part.

    Images are decoded one batch ahead in a thread while the model runs.

    Returns
    -------
    (n_images, n_masks) : tuple of int
    """
    batches = [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)]
    results = []

    def load(batch):
        return [read_image(images_dir, f) for _, f in batch]

    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(load, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            assert nxt is not None  # submitted for every batch
            images = nxt.result()
            nxt = pool.submit(load, batches[k + 1]) if k + 1 < len(batches) else None
            results += detector(images)
            if on_batch is not None:
                on_batch(len(batch))
    n_masks = write_part(parts_dir, shard[0][0], [f for _, f in shard], results)
    return len(shard), n_masks
