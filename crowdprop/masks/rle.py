"""COCO run-length encoded masks: the only module that knows RLE details.

Glossary
--------
mask
    A binary image of shape ``(h, w)``; 1 marks the object's pixels.
RLE
    Run-length encoding as defined by COCO/pycocotools: the mask is read in
    **column-major (Fortran) order**, and ``counts`` alternates runs of 0s and
    1s, starting with a run of 0s (which may be empty). ``size`` is ``[h, w]``.
compressed RLE
    ``counts`` stored as pycocotools' LEB128-like ASCII string. This is the only
    form crowdprop keeps on disk (Parquet column ``rle``), together with
    ``height`` and ``width``.
uncompressed RLE
    ``counts`` as a list of ints (COCO uses it for crowd regions). Converted to
    compressed on input.
polygon
    COCO polygon segmentation: a list of ``[x1, y1, x2, y2, ...]`` rings in pixel
    coordinates, rasterised with pycocotools' ``frPyObjects``.
box
    ``[x, y, w, h]`` in pixels, COCO convention (top-left corner, width, height).
IoU
    Intersection over union of two masks' pixel sets, from the RLEs without
    decoding (pycocotools ``iou`` with ``iscrowd=0``).

Masks stay RLE everywhere; dense arrays exist only briefly (featurising,
rendering a HIT image) and one mask at a time.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from pycocotools import mask as _mask


def encode(mask: np.ndarray) -> str:
    """Encode a binary ``(h, w)`` mask as a compressed RLE counts string."""
    arr = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = _mask.encode(arr)
    return rle["counts"].decode("ascii")


def to_coco(counts: str, height: int, width: int) -> dict:
    """The pycocotools RLE object for a stored mask."""
    return {"size": [int(height), int(width)], "counts": counts.encode("ascii")}


def to_json(counts: str, height: int, width: int) -> dict:
    """The JSON-serialisable COCO ``segmentation`` for a stored mask."""
    return {"size": [int(height), int(width)], "counts": counts}


def decode(counts: str, height: int, width: int) -> np.ndarray:
    """Decode one stored mask to a dense ``(h, w)`` uint8 array."""
    return _mask.decode(to_coco(counts, height, width))


def area(counts: Sequence[str], heights: Sequence[int], widths: Sequence[int]) -> np.ndarray:
    """Pixel areas of many stored masks, without decoding."""
    if len(counts) == 0:
        return np.zeros(0, dtype=np.float64)
    objs = [to_coco(c, h, w) for c, h, w in zip(counts, heights, widths)]
    # pycocotools 2.0.11 overflows a uint8 when area() gets more than 255 objects.
    return np.concatenate(
        [np.asarray(_mask.area(objs[i:i + 255]), dtype=np.float64).reshape(-1) for i in range(0, len(objs), 255)]
    )


def bbox(counts: Sequence[str], heights: Sequence[int], widths: Sequence[int]) -> np.ndarray:
    """``(n, 4)`` COCO boxes ``[x, y, w, h]`` of many stored masks."""
    if len(counts) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    objs = [to_coco(c, h, w) for c, h, w in zip(counts, heights, widths)]
    return np.asarray(_mask.toBbox(objs), dtype=np.float64).reshape(-1, 4)


def from_polygons(polygons: list, height: int, width: int) -> str:
    """Rasterise COCO polygons (list of flat coordinate rings) into one compressed RLE."""
    rles = _mask.frPyObjects([list(map(float, p)) for p in polygons], int(height), int(width))
    merged = _mask.merge(rles)
    return merged["counts"].decode("ascii")


def from_uncompressed(counts: list, height: int, width: int) -> str:
    """Convert an uncompressed (list-of-ints) RLE to a compressed counts string."""
    rle = _mask.frPyObjects({"size": [int(height), int(width)], "counts": list(counts)}, int(height), int(width))
    return rle["counts"].decode("ascii")


def uncompressed_length(counts: Iterable[int]) -> int:
    """Number of pixels an uncompressed RLE covers (must equal h * w)."""
    return int(sum(int(c) for c in counts))


def compressed_length(counts: str, height: int, width: int) -> int:
    """Number of pixels a compressed RLE covers, decoded from its counts string.

    pycocotools does not check that runs add up to ``h * w``; we do, so that an
    RLE whose size disagrees with its image is caught on input. Raises ValueError
    for a malformed counts string (see :func:`runs_many`).
    """
    return int(_runs(counts).sum())


def iou_matrix(a: Sequence[str], b: Sequence[str], height: int, width: int) -> np.ndarray:
    """``(len(a), len(b))`` IoU between two lists of masks on the same image."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    da = [to_coco(c, height, width) for c in a]
    db = [to_coco(c, height, width) for c in b]
    return np.asarray(_mask.iou(da, db, [0] * len(db)), dtype=np.float64).reshape(len(a), len(b))


def _runs(counts: str) -> np.ndarray:
    """Run lengths (int64) of one compressed RLE counts string: :func:`runs_many` of one."""
    return runs_many([counts])[0]


def runs_many(counts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many compressed RLE counts strings at once (one pass of numpy calls).

    pycocotools' decoding: 5 bits per character, bit 0x20 continues a number, bit
    0x10 of the last character is the sign, and run ``m > 2`` is stored as a
    difference to run ``m - 2``. Returns ``(runs, offsets)``: the runs of string
    ``i`` are ``runs[offsets[i]:offsets[i + 1]]``. Raises ValueError for a character
    outside the alphabet, a string cut in the middle of a number, or a negative run.
    """
    enc = [s.encode("ascii") for s in counts]
    n = len(enc)
    lens = np.fromiter((len(b) for b in enc), dtype=np.int64, count=n)
    char_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=char_off[1:])
    c = np.frombuffer(b"".join(enc), dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("invalid character in RLE counts string")
    is_end = (c & 0x20) == 0
    if not is_end[char_off[1:][lens > 0] - 1].all():
        raise ValueError("truncated RLE counts string")
    ends = np.flatnonzero(is_end)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    k = np.arange(c.size) - np.repeat(starts, ends - starts + 1)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (ends[neg] - starts[neg] + 1))
    offsets = np.searchsorted(ends, char_off)  # numbers of string i: offsets[i]:offsets[i+1]
    owner = np.repeat(np.arange(n), np.diff(offsets))
    m = np.arange(x.size) - offsets[owner]  # index of the run within its string
    out = x.copy()
    # run m > 2 is stored as a difference to run m - 2: cumulative sums per string over
    # the odd runs (1, 3, ...) and over the even runs from 2 on (2, 4, ...)
    for sel in ((m >= 2) & (m % 2 == 0), m % 2 == 1):
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        v = x[idx]
        cs = np.cumsum(v)
        seg = owner[idx]
        first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        before = (cs - v)[first]
        out[idx] = cs - np.repeat(before, np.diff(np.r_[first, idx.size]))
    if np.any(out < 0):
        raise ValueError("negative run in RLE counts string")
    return out, offsets


def crop_runs(runs: np.ndarray, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The ``box = (x0, y0, x1, y1)`` crop (end-exclusive, clipped) of a mask given by its runs.

    ``runs`` are uncompressed RLE counts (:func:`_runs`, :func:`runs_many`). Returns a
    ``(y1 - y0, x1 - x0)`` uint8 array; only image columns ``x0:x1`` are expanded.
    """
    h, w = int(height), int(width)
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
    y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.uint8)
    bounds = np.empty(runs.size + 1, dtype=np.int64)
    bounds[0] = 0
    np.cumsum(runs, out=bounds[1:])
    lo, hi = x0 * h, x1 * h
    np.clip(bounds, lo, hi, out=bounds)
    vals = np.zeros(runs.size, dtype=np.uint8)
    vals[1::2] = 1
    flat = np.repeat(vals, np.diff(bounds))
    if flat.size < hi - lo:  # runs end early: the rest is background
        flat = np.concatenate([flat, np.zeros(hi - lo - flat.size, dtype=np.uint8)])
    return flat.reshape(x1 - x0, h)[:, y0:y1].T


def decode_box(counts: str, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Decode only the pixels inside ``box = (x0, y0, x1, y1)`` (end-exclusive, clipped).

    Returns the ``(y1 - y0, x1 - x0)`` uint8 crop of :func:`decode`'s mask. Only the
    image columns ``x0:x1`` are expanded, so a small object in a large image costs
    far less than a full decode.
    """
    return crop_runs(_runs(counts), height, width, box)
