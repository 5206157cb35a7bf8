"""Units a worker is asked about, and what the network thinks of each.

Granularities (``kind``):

* ``frame``: a whole frame; a worker labels it superpixel by superpixel (see :mod:`.crowd`).
* ``patch``: a ``patch`` x ``patch`` pixel square (the last row and column of a frame may be narrower).
* ``superpixel``: a SLIC superpixel (scikit-image) of the frame.

:func:`unit_maps` returns int32 ``(T, H, W)`` maps of global unit ids, numbered frame by frame
(frame 0's units first), and the table of units (``unit, frame, pixels``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("frame", "patch", "superpixel")


def superpixels(frames: np.ndarray, *, n_segments: int, compactness: float = 10.0) -> np.ndarray:
    """int32 (T, H, W): SLIC superpixels of every frame, ids local to each frame (0 ..)."""
    from skimage.segmentation import slic

    out = np.zeros(frames.shape[:3], np.int32)
    for t, f in enumerate(frames):
        seg = slic(f, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
        # renumber densely (SLIC may skip ids)
        out[t] = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    return out


def _global(local: np.ndarray, offset: int = 0, first_frame: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Local per-frame ids (0 .. n_t-1) to global ids (from ``offset``), and the unit table
    (frames numbered from ``first_frame``): a block of a video at a time gives the same ids as
    the whole video at once."""
    maps = np.zeros(local.shape, np.int32)
    ids: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    pixels: list[np.ndarray] = []
    for t0, m in enumerate(local):
        counts = np.bincount(m.ravel())
        present = np.flatnonzero(counts)
        remap = np.full(len(counts), -1, np.int64)
        remap[present] = np.arange(len(present)) + offset
        maps[t0] = remap[m]
        ids.append(remap[present])
        frames.append(np.full(len(present), t0 + first_frame, np.int32))
        pixels.append(counts[present])
        offset += len(present)
    table = pd.DataFrame({"unit": np.concatenate(ids).astype(np.int64), "frame": np.concatenate(frames),
                          "pixels": np.concatenate(pixels).astype(np.int64)})
    return maps, table


def unit_maps(kind: str, *, shape: tuple[int, int, int], patch: int = 16,
              superpixel_map: np.ndarray | None = None, offset: int = 0,
              first_frame: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Global unit id maps ``(T, H, W)`` and the unit table for granularity ``kind`` (of a block
    of frames from ``first_frame`` whose first unit id is ``offset``)."""
    t, h, w = shape
    if kind == "frame":
        local = np.zeros(shape, np.int32)
    elif kind == "patch":
        if patch < 1:
            raise ValueError("patch must be >= 1")
        cols = (w + patch - 1) // patch
        yy, xx = np.mgrid[0:h, 0:w]
        local = np.broadcast_to((yy // patch) * cols + xx // patch, shape).astype(np.int32)
    elif kind == "superpixel":
        if superpixel_map is None:
            raise ValueError("superpixel units need the superpixel map")
        local = superpixel_map
    else:
        raise ValueError(f"unit kind must be one of {KINDS}, got {kind!r}")
    return _global(np.ascontiguousarray(local), offset, first_frame)


def pooled(maps: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    """Mean of ``values`` over each unit's pixels.

    ``values`` is ``(T, H, W)`` (returns ``(n_units,)``) or ``(T, C, H, W)`` (returns ``(n_units, C)``).
    """
    ids = maps.ravel()
    counts = np.bincount(ids, minlength=n_units).astype(np.float64)
    counts[counts == 0] = 1
    if values.ndim == 3:
        return np.bincount(ids, weights=values.ravel().astype(np.float64), minlength=n_units) / counts
    c = values.shape[1]
    per = np.moveaxis(values, 1, -1).reshape(-1, c)
    out = np.empty((n_units, c), np.float64)
    for j in range(c):
        out[:, j] = np.bincount(ids, weights=per[:, j].astype(np.float64), minlength=n_units)
    return out / counts[:, None]


def pixel_uncertainty(probs: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """(T, H, W) from probabilities (T, K, H, W): ``entropy`` (nats) or ``margin`` (1 - (p1 - p2))."""
    p = np.clip(probs, 1e-8, 1.0)
    if measure == "entropy":
        return -(p * np.log(p)).sum(1)
    if measure == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    raise ValueError(f"uncertainty must be 'entropy' or 'margin', got {measure!r}")


def class_hist(maps: np.ndarray, labels: np.ndarray, lo: int, n: int, n_classes: int) -> np.ndarray:
    """int64 ``(n, K)``: pixels of each class in units ``lo .. lo + n - 1`` (``maps`` holds only those)."""
    return np.bincount((maps.ravel().astype(np.int64) - lo) * n_classes + labels.ravel(),
                       minlength=n * n_classes).reshape(n, n_classes)


def truth_from_hist(hist: np.ndarray, mixed_below: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unit_truth` from a unit x class pixel histogram."""
    major = hist.argmax(1)
    share = hist.max(1) / np.maximum(hist.sum(1), 1)
    return np.where(share >= mixed_below, major, -1).astype(np.int64), share


def unit_truth(maps: np.ndarray, labels: np.ndarray, n_units: int, n_classes: int, *,
               mixed_below: float) -> tuple[np.ndarray, np.ndarray]:
    """Majority class of each unit and its share of the unit's pixels; the answer a careful
    worker gives is the class when ``share >= mixed_below``, else "mixed" (-1)."""
    return truth_from_hist(class_hist(maps, labels, 0, n_units, n_classes), mixed_below)


def majority_labels(maps: np.ndarray, labels: np.ndarray, n_units: int, n_classes: int) -> np.ndarray:
    """Each pixel labelled with its unit's majority class (full manual labeling by units)."""
    hist = np.bincount(maps.ravel().astype(np.int64) * n_classes + labels.ravel(),
                       minlength=n_units * n_classes).reshape(n_units, n_classes)
    return hist.argmax(1)[maps].astype(labels.dtype)
