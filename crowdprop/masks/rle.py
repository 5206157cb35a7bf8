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
    n = len(counts)
    try:
        joined = "".join(counts).encode("ascii")
    except UnicodeEncodeError:
        for s in counts:  # the same error as the string on its own
            s.encode("ascii")
        raise
    lens = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    char_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=char_off[1:])
    c = np.frombuffer(joined, dtype=np.uint8)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    if c.min() < 48 or c.max() > 48 + 63:
        raise ValueError("invalid character in RLE counts string")
    c = c - np.uint8(48)
    is_end = (c & 0x20) == 0
    if not is_end[char_off[1:][lens > 0] - 1].all():
        raise ValueError("truncated RLE counts string")
    ends = np.flatnonzero(is_end)
    length = np.diff(ends, prepend=-1)  # characters per number
    # number j = sum over its characters k of (c & 0x1F) << 5k, first character least significant
    x = (c[ends - length + 1] & 0x1F).astype(np.int64)
    for k in range(1, int(length.max())):
        sel = np.flatnonzero(length > k)
        x[sel] |= (c[ends[sel] - length[sel] + 1 + k] & 0x1F).astype(np.int64) << (5 * k)
    x -= ((c[ends] >> 4) & 1).astype(np.int64) << (5 * length)  # bit 0x10 of the last character: negative
    offsets = np.searchsorted(ends, char_off)  # numbers of string i: offsets[i]:offsets[i+1]
    # run m > 2 is stored as a difference to run m - 2: cumulative sums along every second
    # number, restarting at the first three numbers of each string
    head = np.zeros(x.size, dtype=bool)
    for d in (0, 1, 2):
        at = offsets[:-1] + d
        head[at[at < offsets[1:]]] = True
    for p in (0, 1):
        v = x[p::2]
        if v.size == 0:
            continue
        h = head[p::2]
        cs = np.cumsum(v)
        last = np.maximum.accumulate(np.where(h, np.arange(v.size), 0))
        x[p::2] = cs - (cs - v)[last]
    if x.size and x.min() < 0:
        raise ValueError("negative run in RLE counts string")
    return x, offsets


def _owner(offsets: np.ndarray) -> np.ndarray:
    """String index of every run, for runs laid out by ``offsets`` (:func:`runs_many`)."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def _sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-string sums of ``values`` laid out by ``offsets`` (empty strings sum to 0)."""
    cs = np.zeros(values.size + 1, dtype=values.dtype)
    np.cumsum(values, out=cs[1:])
    return cs[offsets[1:]] - cs[offsets[:-1]]


def totals_many(runs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pixels each string's runs cover (:func:`compressed_length` of each, from :func:`runs_many`)."""
    return _sums(runs, offsets)


def areas_many(runs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Foreground pixels of each string (pycocotools ``area``: the sum of the odd runs), float64."""
    odd = ((np.arange(runs.size) - offsets[_owner(offsets)]) % 2 == 1)
    return _sums(np.where(odd, runs, 0), offsets).astype(np.float64)


def bbox_many(counts: Sequence[str], runs: np.ndarray, offsets: np.ndarray, heights: Sequence[int] | np.ndarray,
              widths: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(n, 4)`` COCO boxes of many masks from their runs: pycocotools ``toBbox``, vectorised.

    The same arithmetic as pycocotools' ``rleToBbox``: an odd number of runs drops the
    last (background) one; the box spans every foreground run's first and last pixel
    (runs of length 0 left out), and a foreground run that crosses a column boundary
    spans the whole column height. Masks with fewer than two runs, or no foreground
    pixel, get ``[0, 0, 0, 0]``. ``runs, offsets`` are :func:`runs_many` of ``counts``.
    """
    n = len(offsets) - 1
    h = np.asarray(heights, dtype=np.int64)
    w = np.asarray(widths, dtype=np.int64)
    out = np.zeros((n, 4), dtype=np.float64)
    m = (np.diff(offsets) // 2) * 2
    if not (m > 0).any():
        return out
    size = runs.size
    start = offsets[:-1]
    owner = _owner(offsets)
    odd = (np.arange(size) - start[owner]) & 1  # j % 2, j the run's index in its string
    # t: the last pixel of a foreground run (odd j), its first (even j); one more entry at the
    # end so that every string's usable runs [start, start + m) make a valid reduceat cut
    t = np.empty(size + 1, dtype=np.int64)
    np.cumsum(runs, out=t[:size])
    t[:size] -= np.where(start > 0, t[np.maximum(start - 1, 0)], 0)[owner] + odd
    t[size] = 0
    cuts = np.empty(2 * n, dtype=np.intp)  # string i's usable runs: reduceat of cuts[2i]:cuts[2i + 1]
    cuts[0::2] = start
    cuts[1::2] = start + m
    hh = np.append(h[owner], 1)
    if int(t.max()) + int(h.max()) < 2**52:  # the floor of the float quotient is exact: no integer division
        x = np.floor(t / hh).astype(np.int64)
    else:  # pragma: no cover - masks of more than 2**52 pixels
        x = t // hh
    y = t - x * hh
    fg = np.zeros(size + 1, dtype=bool)  # an odd j: a foreground run
    fg[:size] = odd == 1
    empty = np.flatnonzero(fg[:size] & (runs == 0))
    empty = empty[empty - start[owner[empty]] < m[owner[empty]]]  # empty foreground runs in use
    # a foreground run crossing columns: its last pixel in a later column than its first
    cross = np.zeros(size + 1, dtype=bool)
    np.greater(x[1:size], x[:size - 1], out=cross[1:size], where=fg[1:size])
    lo_x, lo_y, hi_x, hi_y = x, y, x, y
    if empty.size:  # pycocotools skips them (both ends): out of every reduction
        skip = np.zeros(size + 1, dtype=bool)
        skip[empty] = skip[empty - 1] = True
        big = np.iinfo(np.int64).max
        lo_x, lo_y = np.where(skip, big, x), np.where(skip, big, y)
        hi_x, hi_y = np.where(skip, -1, x), np.where(skip, -1, y)
        cross[empty] = False
        m = np.where(np.add.reduceat(skip, cuts)[0::2] == m, 0, m)  # no foreground pixel left: no box
    spans = np.logical_or.reduceat(cross, cuts)[0::2]
    xs = np.minimum(np.minimum.reduceat(lo_x, cuts)[0::2], w)
    ys = np.minimum(np.minimum.reduceat(lo_y, cuts)[0::2], h)
    xe = np.maximum(np.maximum.reduceat(hi_x, cuts)[0::2], 0)
    ye = np.maximum(np.maximum.reduceat(hi_y, cuts)[0::2], 0)
    ys = np.where(spans, 0, ys)
    ye = np.where(spans, h - 1, ye)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = xs, ys, xe - xs + 1, ye - ys + 1
    out[m == 0] = 0.0
    return out


def intervals_many(runs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground pixel ranges of many masks: ``(starts, ends, offsets)``.

    Pixels are numbered in column-major order (``x * h + y``); mask ``i`` covers
    ``[starts[k], ends[k])`` for ``k`` in ``offsets[i]:offsets[i + 1]``, in increasing
    order, empty runs left out. ``runs, offsets`` are :func:`runs_many`'s.
    """
    n = len(offsets) - 1
    owner = _owner(offsets)
    cs = np.zeros(runs.size + 1, dtype=np.int64)
    np.cumsum(runs, out=cs[1:])
    fg = (((np.arange(runs.size) - offsets[owner]) % 2) == 1) & (runs > 0)
    k = np.flatnonzero(fg)
    starts = cs[k] - cs[offsets[:-1]][owner[k]]
    ends = starts + runs[k]
    return starts, ends, np.searchsorted(owner[k], np.arange(n + 1))


_PAIR_CHUNK = 1 << 22


_ZERO = np.zeros(1, dtype=np.int64)
"""Index 0, for :func:`iou_pairs` of a single pair."""


def iou_pairs(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
              area_a: np.ndarray, area_b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of mask ``a[ia[k]]`` with mask ``b[ib[k]]`` for every pair ``k``, without decoding.

    ``a`` and ``b`` are :func:`intervals_many` of two mask lists, ``area_a`` and ``area_b``
    their pixel areas; both masks of a pair must have the same size. The same number as
    pycocotools ``iou`` with ``iscrowd=0``: intersection over union of pixel counts, 0 when
    they do not overlap. The intersection adds, over the foreground ranges ``[s, e)`` of
    the ``a`` mask, ``F(e) - F(s)`` where ``F(t)`` counts the ``b`` mask's pixels before
    ``t`` (a binary search in ``b``'s ranges, all pairs at once).
    """
    a_start, a_end, a_off = a
    b_start, b_end, b_off = b
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    out = np.zeros(len(ia), dtype=np.float64)
    if len(ia) == 0:
        return out
    span = int(max(a_end.max(initial=0), b_end.max(initial=0))) + 1
    if len(area_b) * span >= 2**62:  # keys would overflow: one mask pair at a time is rare enough
        for k in range(len(ia)):
            out[k] = iou_pairs((a_start[a_off[ia[k]]:a_off[ia[k] + 1]], a_end[a_off[ia[k]]:a_off[ia[k] + 1]],
                                np.array([0, a_off[ia[k] + 1] - a_off[ia[k]]])),
                               (b_start[b_off[ib[k]]:b_off[ib[k] + 1]], b_end[b_off[ib[k]]:b_off[ib[k] + 1]],
                                np.array([0, b_off[ib[k] + 1] - b_off[ib[k]]])),
                               area_a[ia[k]:ia[k] + 1], area_b[ib[k]:ib[k] + 1], _ZERO, _ZERO)[0]
        return out
    b_len = b_end - b_start
    b_cum = np.zeros(b_len.size + 1, dtype=np.int64)
    np.cumsum(b_len, out=b_cum[1:])
    b_owner = _owner(b_off)
    b_key = b_owner * span + b_start
    n_a = a_off[ia + 1] - a_off[ia]
    inter = np.zeros(len(ia), dtype=np.float64)
    bounds = np.searchsorted(np.cumsum(n_a), np.arange(_PAIR_CHUNK, int(n_a.sum()) + _PAIR_CHUNK, _PAIR_CHUNK))
    lo = 0
    for hi in np.unique(np.r_[bounds + 1, len(ia)]).tolist():
        hi = min(hi, len(ia))
        if hi <= lo:
            continue
        cnt = n_a[lo:hi]
        rep = np.repeat(np.arange(hi - lo), cnt)
        first = np.zeros(hi - lo, dtype=np.int64)
        np.cumsum(cnt[:-1], out=first[1:])
        k = a_off[ia[lo:hi]][rep] + (np.arange(rep.size) - first[rep])
        g = ib[lo:hi][rep]
        base = b_off[g]
        f = np.zeros(rep.size, dtype=np.int64)
        for t, sign in ((a_end[k], 1), (a_start[k], -1)):
            j = np.searchsorted(b_key, g * span + t, side="right") - 1
            ok = j >= base
            jj = np.where(ok, j, 0)
            f += sign * np.where(ok, b_cum[jj] - b_cum[base] + np.minimum(t - b_start[jj], b_len[jj]), 0)
        inter[lo:hi] = np.bincount(rep, weights=f, minlength=hi - lo)
        lo = hi
    union = np.asarray(area_a, dtype=np.float64)[ia] + np.asarray(area_b, dtype=np.float64)[ib] - inter
    np.divide(inter, union, out=out, where=inter > 0)
    return out


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
