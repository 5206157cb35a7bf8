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
    RLE whose size disagrees with its image is caught on input.
    """
    s = counts.encode("ascii")
    cnts: list[int] = []
    i = 0
    while i < len(s):
        x = 0
        k = 0
        more = 1
        while more:
            if i >= len(s):
                raise ValueError("truncated RLE counts string")
            c = s[i] - 48
            if c < 0 or c > 63:
                raise ValueError("invalid character in RLE counts string")
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        if x < 0:
            raise ValueError("negative run in RLE counts string")
        cnts.append(x)
    return sum(cnts)


def iou_matrix(a: Sequence[str], b: Sequence[str], height: int, width: int) -> np.ndarray:
    """``(len(a), len(b))`` IoU between two lists of masks on the same image."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    da = [to_coco(c, height, width) for c in a]
    db = [to_coco(c, height, width) for c in b]
    return np.asarray(_mask.iou(da, db, [0] * len(db)), dtype=np.float64).reshape(len(a), len(b))
