"""Built-in mask-shape features, computed from the RLE alone (no model weights)."""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ..masks import rle

log = logging.getLogger(__name__)

_BATCH = 2048


@lru_cache(maxsize=4096)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 area-average resampling matrix.

    Input pixel ``i`` covers ``[i, i + 1)``; output cell ``k`` covers
    ``[k * s, (k + 1) * s)`` with ``s = n_in / n_out``. The weight is the length of
    their overlap divided by ``s``, so every row sums to 1 (up- and downsampling).
    """
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    i = np.arange(n_in, dtype=np.float64)
    lo = np.maximum(i[None, :], edges[:-1, None])
    hi = np.minimum(i[None, :] + 1.0, edges[1:, None])
    w = np.clip(hi - lo, 0.0, None) / (n_in / n_out)
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


def resize_area(crop: np.ndarray, grid: int) -> np.ndarray:
    """Area-average resample a ``(h, w)`` array to ``(grid, grid)`` float32.

    Values stay in the range of the input (each output is a convex combination of
    input pixels).
    """
    h, w = crop.shape
    if h == 0 or w == 0:
        return np.zeros((grid, grid), dtype=np.float32)
    if crop.strides[0] < crop.strides[1]:  # column-major view (RLE crops): work on its transpose
        return (_area_weights(w, grid) @ crop.T.astype(np.float32) @ _area_weights(h, grid).T).T
    return _area_weights(h, grid) @ crop.astype(np.float32) @ _area_weights(w, grid).T


def shape_features(masks: pd.DataFrame, *, grid: int = 16, progress: bool = False) -> np.ndarray:
    """Shape descriptor of every mask.

    Each mask is decoded inside its box only (RLE strings parsed in batches with
    :func:`crowdprop.masks.rle.runs_many`, then :func:`crowdprop.masks.rle.crop_runs`),
    the ``(bbox_h, bbox_w)`` crop is resampled to ``grid x grid`` by area averaging
    (:func:`resize_area`; values in [0, 1] = fraction of each cell covered), and two
    scalars are appended: ``log(area)`` with area the pixel count, and
    ``log(bbox_w / bbox_h)``. Degenerate masks (0 pixels) get an all-zero grid and
    ``log(max(area, 1))``, ``log(max(w, 1) / max(h, 1))``.

    Parameters
    ----------
    masks : DataFrame, n rows
        Columns ``rle``, ``height``, ``width``; boxes ``bbox_x, bbox_y, bbox_w, bbox_h``
        are used when present (computed from the RLE otherwise).
    grid : int
        Side of the resampled grid.
    progress : bool
        Show a tqdm bar (only when stderr is a terminal).

    Returns
    -------
    features : (n, grid * grid + 2) float32
        Row ``i``: the grid row-major (y, then x), then ``log(area)``, ``log(w / h)``.
    """
    if grid < 1:
        raise ValueError("grid must be >= 1")
    n = len(masks)
    out = np.zeros((n, grid * grid + 2), dtype=np.float32)
    if n == 0:
        return out
    counts = masks["rle"].tolist()
    hs = masks["height"].to_numpy(np.int64)
    ws = masks["width"].to_numpy(np.int64)
    if all(c in masks.columns for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
        boxes = masks[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].to_numpy(np.float64)
    else:
        boxes = rle.bbox(counts, hs, ws)
    x0 = np.floor(boxes[:, 0]).astype(np.int64)
    y0 = np.floor(boxes[:, 1]).astype(np.int64)
    x1 = np.ceil(boxes[:, 0] + boxes[:, 2]).astype(np.int64)
    y1 = np.ceil(boxes[:, 1] + boxes[:, 3]).astype(np.int64)
    g2 = grid * grid
    it = tqdm(range(n), desc="shape features", unit="mask", disable=None if progress else True)
    # the products are tiny: BLAS threads only add overhead (and stall on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        for i in it:
            if i % _BATCH == 0:  # parse the RLE strings of a whole batch at once
                runs, offs = rle.runs_many(counts[i:i + _BATCH])
            j = i % _BATCH
            crop = rle.crop_runs(runs[offs[j]:offs[j + 1]], hs[i], ws[i], (x0[i], y0[i], x1[i], y1[i]))
            out[i, :g2] = resize_area(crop, grid).reshape(-1)
            out[i, g2] = np.log(max(int(np.count_nonzero(crop)), 1))
    np.clip(out[:, :g2], 0.0, 1.0, out=out[:, :g2])  # float32 rounding can overshoot 1 by an ulp
    bw = np.maximum(boxes[:, 2], 1.0)
    bh = np.maximum(boxes[:, 3], 1.0)
    out[:, g2 + 1] = np.log(bw / bh)
    log.debug("shape features for %d masks (grid %d)", n, grid)
    return out
