"""Synthetic prediction sets with known ground truth and latent cluster structure.

For scale tests and benchmarks: any number of masks, cheap to make, loadable by
:func:`crowdprop.masks.load_ground_truth` and :func:`crowdprop.masks.load_predictions`.
Nothing here is a real image or a real annotation; every file says so.

Generative model
----------------
classes
    ``n_classes`` classes with Zipf-like sizes (share of class of rank ``r`` is
    proportional to ``1 / r``, rank order shuffled over category ids); every
    class has at least one prediction.
modes
    Each class is split into latent *modes* (think "viewpoint" or "failure
    type"): ``clip(round(sqrt(n_c) / 2), 5, 50)`` modes (never more than the
    class has masks), with Dirichlet(1) sizes. A mode has

    - a quality kind and level (the mean IoU its predictions aim at):
      ``good`` (share 0.45, level U(0.82, 0.95), spread 0.05: mostly IoU > 0.75),
      ``bad`` (0.30, level U(0.05, 0.40), spread 0.08: mostly wrong),
      ``mixed`` (0.25, level U(0.50, 0.80), spread 0.20);
    - a shape family (ellipse, rectangle, or a random convex polygon of 5-8
      vertices), a typical size and aspect ratio;
    - an error profile (how much of its error is localisation, over/under
      segmentation, anisotropic scaling, rotation);
    - a feature centre: class centre ``N(0, 1)`` per dimension plus a mode
      offset ``N(0, 0.6^2)`` per dimension.
ground truth
    Each mode owns ``max(1, round(n_m / 1.25))`` ground-truth instances (so some
    instances are predicted more than once), plus ~10 % instances that no
    prediction comes from (missed objects). Instances are shapes of the mode's
    family, jittered in size, aspect and angle, centred uniformly in the image
    (overlaps allowed), grouped 1 + Poisson(3) to an image.
predictions
    Each prediction comes from one instance of its mode and aims at a target IoU
    ``clip(level + spread * N(0, 1), 0, 1)``. The instance's shape is moved along
    a random direction in (shift, log-scale, log-aspect, rotation) space, mixing
    the mode's error profile with per-mask noise; the step along that direction
    is found by bisection so that the IoU of the rasterised masks is as close as
    possible to the target. The recorded ``true_iou`` is the exact IoU with the
    best same-class instance of the image, the quantity
    :func:`crowdprop.masks.match_ground_truth` computes.
scores
    ``score = sigmoid(0.4 + 2.2 * (iou - 0.5) + b_mode + N(0, 1))`` with a
    per-mode bias ``b_mode ~ N(0, 0.5^2)``; ``pred_iou = clip(iou + b'_mode +
    N(0, 0.25^2), 0, 1)`` with ``b'_mode ~ N(0, 0.1^2)``. Over whole sets the
    Pearson correlation with the true IoU is about 0.5 for ``score`` (0.42-0.58
    measured over 36 sets of 2,000-10,000 masks and 5-50 classes) and about 0.75
    for ``pred_iou`` (0.67-0.81); both are rounded to 5 decimals. Each set's
    README.txt states its own values.
features
    ``(N, feature_dim)`` float32: mode centre + ``N(0, 0.3^2)`` per dimension, so
    modes form tight, well separated clusters inside each class.

Pixel model: pixel ``(row y, column x)`` belongs to a shape when its centre
``(x + 0.5, y + 0.5)`` does. Every shape used here is convex, so each image
column of a mask is one run of rows ``[top, bot)``; masks are computed, compared
(exact integer IoU) and rasterised from these per-column intervals, which keeps
a million masks cheap.

All randomness comes from one ``numpy.random.Generator`` seeded with ``seed``,
and every random number is drawn before the chunked work starts, so results do
not depend on chunk sizes.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Protocol
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pycocotools import mask as _mask
from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: Mode quality kinds: (name, share, level low, level high, per-mask spread).
MODE_KINDS = (
    ("good", 0.45, 0.82, 0.95, 0.05),
    ("bad", 0.30, 0.05, 0.40, 0.08),
    ("mixed", 0.25, 0.50, 0.80, 0.20),
)
#: Shape families and their shares.
SHAPES = (("ellipse", 0.45), ("rectangle", 0.25), ("polygon", 0.30))
ELLIPSE, RECTANGLE, POLYGON = 0, 1, 2
MAX_VERTICES = 8
PREDICTIONS_PER_INSTANCE = 1.25
MISSED_SHARE = 0.10
INSTANCES_PER_IMAGE_POISSON = 3.0
CLASS_SPREAD, MODE_SPREAD, FEATURE_NOISE = 1.0, 0.6, 0.3
SCORE_OFFSET, SCORE_SLOPE, SCORE_NOISE, SCORE_MODE_BIAS = 0.4, 2.2, 1.0, 0.5
PRED_IOU_NOISE, PRED_IOU_MODE_BIAS = 0.25, 0.1
#: Size of a step of 1 along a perturbation direction: shift in radii, log-scale, log-aspect, radians.
STEP_SCALE = np.array([3.0, 3.0, 1.5, 1.0])
BISECTION_STEPS = 12
MIN_AXIS = 2.0
CHUNK = 4096

FILES = ("gt.json", "predictions.json", "features.npy", "latent.npz", "README.txt")


@dataclass
class SetFiles:
    """What every synthetic set writes: COCO ground truth and results, features and the truth.

    Attributes
    ----------
    gt : dict
        COCO instances ground truth (``info``, ``images``, ``categories``, ``annotations``).
    predictions : list of dict
        COCO results, one per mask, in file order (by image, then score descending);
        ``id`` runs 1..N.
    features : ndarray, shape (N, feature_dim), float32
        Row ``i`` belongs to ``predictions[i]``.
    true_iou : ndarray, shape (N,), float64
        Exact IoU of each prediction with its best same-class instance of its image.
    target_iou : ndarray, shape (N,)
        The IoU the perturbation aimed at.
    """

    gt: dict
    predictions: list
    features: np.ndarray
    true_iou: np.ndarray
    target_iou: np.ndarray = field(repr=False)

    @property
    def description(self) -> str:
        """The synthetic-data notice stored in ``info.description``."""
        return self.gt["info"]["description"]


class SetSummary(Protocol):
    """What the README of a synthetic set is written from (:func:`readme_text`): a :class:`SetFiles`
    with its ``params``, or the summary a streamed set keeps (``scores``: score and pred_iou
    arrays in file order, instead of the records)."""

    params: dict
    gt: dict
    true_iou: np.ndarray


@dataclass
class SyntheticSet(SetFiles):
    """A synthetic prediction set with its ground truth (the ``modes`` generator).

    Attributes
    ----------
    gt, predictions, features, true_iou, target_iou
        As in :class:`SetFiles`; ``true_iou`` differs from ``target_iou`` by pixel
        rounding and by overlaps with other instances.
    mode : ndarray, shape (N,), int64
        Latent mode of each prediction (index into the ``mode_*`` arrays).
    source_ann_id : ndarray, shape (N,), int64
        Ground-truth annotation the prediction was derived from.
    mode_category : ndarray, shape (M,), int64
        Category id of each mode.
    mode_kind : ndarray, shape (M,), str
        ``good``, ``bad`` or ``mixed``.
    mode_level : ndarray, shape (M,)
        Mean target IoU of each mode.
    params : dict
        Seed and parameters the set was made with.
    """

    mode: np.ndarray = field(repr=False)
    source_ann_id: np.ndarray = field(repr=False)
    mode_category: np.ndarray = field(repr=False)
    mode_kind: np.ndarray = field(repr=False)
    mode_level: np.ndarray = field(repr=False)
    params: dict = field(default_factory=dict)


def _command(params: dict) -> str:
    """``crowdprop synth``, with ``--generator G`` for a set whose params name another generator than the default."""
    return f"crowdprop synth --generator {params['generator']}" if "generator" in params else "crowdprop synth"


def description(params: dict) -> str:
    p = params
    return (
        f"SYNTHETIC DATA, not real images or annotations: made by `{_command(p)}` "
        f"(crowdprop {p['version']}) with seed={p['seed']}, masks={p['masks']}, classes={p['classes']}, "
        f"image_size={p['image_size']}, feature_dim={p['feature_dim']}, pred_iou={p['pred_iou']}."
    )


def command_line(params: dict) -> str:
    p = params
    return (f"{_command(p)} --masks {p['masks']} --classes {p['classes']} --seed {p['seed']} "
            f"--image-size {p['image_size']} --feature-dim {p['feature_dim']} "
            f"{'--pred-iou' if p['pred_iou'] else '--no-pred-iou'} -o DIR")


# ---------------------------------------------------------------------------
# geometry: per-column row intervals of convex shapes


def _shape_intervals(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray,
                     theta: np.ndarray, verts: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[top, bot)`` each shape covers in each image column.

    Parameters
    ----------
    kind : ndarray, shape (n,)
        ``ELLIPSE``, ``RECTANGLE`` or ``POLYGON``.
    cx, cy, a, b, theta : ndarray, shape (n,)
        Centre (pixels), semi-axes (pixels) and angle (radians) of each shape.
    verts : ndarray, shape (n, MAX_VERTICES, 2)
        Polygon vertices in the shape's unit frame, counter-clockwise, padded by
        repeating the last vertex (ignored for ellipses).
    height, width : int

    Returns
    -------
    top, bot : ndarray, shape (n, width), int16
        Pixel ``(y, x)`` is in shape ``i`` iff ``top[i, x] <= y < bot[i, x]``;
        ``bot == top`` for an empty column.
    """
    n = len(kind)
    lo = np.full((n, width), np.inf)
    hi = np.full((n, width), -np.inf)
    xs = np.arange(width, dtype=np.float64) + 0.5
    c, s = np.cos(theta), np.sin(theta)
    ell = np.flatnonzero(kind == ELLIPSE)
    if len(ell):
        ia2, ib2 = 1.0 / a[ell] ** 2, 1.0 / b[ell] ** 2
        ce, se = c[ell], s[ell]
        qa = (se * se * ia2 + ce * ce * ib2)[:, None]  # coefficient of Y^2
        qb = (2.0 * ce * se * (ia2 - ib2))[:, None]  # of X Y
        qc = (ce * ce * ia2 + se * se * ib2)[:, None]  # of X^2
        X = xs[None, :] - cx[ell, None]
        disc = (qb * X) ** 2 - 4.0 * qa * (qc * X * X - 1.0)
        ok = disc >= 0
        root = np.sqrt(np.where(ok, disc, 0.0))
        y0 = cy[ell, None]
        lo[ell] = np.where(ok, y0 + (-qb * X - root) / (2.0 * qa), np.inf)
        hi[ell] = np.where(ok, y0 + (-qb * X + root) / (2.0 * qa), -np.inf)
    pol = np.flatnonzero(kind != ELLIPSE)
    if len(pol):
        u = verts[pol] * np.stack([a[pol], b[pol]], axis=1)[:, None, :]
        cp, sp = c[pol, None], s[pol, None]
        vx = cx[pol, None] + cp * u[..., 0] - sp * u[..., 1]  # (m, K)
        vy = cy[pol, None] + sp * u[..., 0] + cp * u[..., 1]
        ex = np.roll(vx, -1, axis=1) - vx
        ey = np.roll(vy, -1, axis=1) - vy
        eps = 1e-9
        # edge i keeps the points left of it: ex (y - vy) - ey (x - vx) >= 0, i.e.
        # y >= vy + ey/ex (x - vx) when ex > 0 (a lower bound), y <= ... when ex < 0 (upper),
        # and x <= vx (ey > 0) or x >= vx (ey < 0) when the edge is vertical.
        lower = ex > eps
        upper = ex < -eps
        sloped = lower | upper
        slope = np.where(sloped, ey / np.where(sloped, ex, 1.0), 0.0)
        icpt = vy - slope * vx
        lo_p = (np.where(lower, icpt, -np.inf)[..., None] + np.where(lower, slope, 0.0)[..., None] * xs).max(axis=1)
        hi_p = (np.where(upper, icpt, np.inf)[..., None] + np.where(upper, slope, 0.0)[..., None] * xs).min(axis=1)
        vertical = ~sloped
        x_max = np.where(vertical & (ey > eps), vx, np.inf).min(axis=1)
        x_min = np.where(vertical & (ey < -eps), vx, -np.inf).max(axis=1)
        bad = (xs[None, :] > x_max[:, None]) | (xs[None, :] < x_min[:, None])
        lo[pol] = np.where(bad, np.inf, lo_p)
        hi[pol] = np.where(bad, -np.inf, hi_p)
    with np.errstate(invalid="ignore"):
        top = np.clip(np.ceil(lo - 0.5), 0, height)
        bot = np.clip(np.floor(hi - 0.5) + 1, 0, height)
    bot = np.maximum(bot, top)
    return top.astype(np.int16), bot.astype(np.int16)


def interval_iou(top1: np.ndarray, bot1: np.ndarray, top2: np.ndarray, bot2: np.ndarray) -> np.ndarray:
    """Exact IoU of masks given as per-column intervals, shape (n, W) each -> (n,).

    Computed as ``intersection / union`` from integer pixel counts, the same
    division pycocotools does, so values agree exactly. 0 when both are empty.
    """
    t1, b1, t2, b2 = (np.asarray(v, dtype=np.int32) for v in (top1, bot1, top2, bot2))
    inter = np.clip(np.minimum(b1, b2) - np.maximum(t1, t2), 0, None).sum(axis=1)
    union = (b1 - t1).sum(axis=1) + (b2 - t2).sum(axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def intervals_to_rle(top: np.ndarray, bot: np.ndarray, height: int) -> list[str]:
    """Compressed COCO RLE counts strings of masks given as per-column intervals (n, W)."""
    n, width = top.shape
    if n == 0:
        return []
    ys = np.arange(height, dtype=np.int16)
    # (n, W, H) in C order is (H, W, n) in Fortran order: column-major masks back to back.
    dense = (ys[None, None, :] >= top[:, :, None]) & (ys[None, None, :] < bot[:, :, None])
    arr = dense.view(np.uint8).transpose(2, 1, 0)
    return [r["counts"].decode("ascii") for r in _mask.encode(arr)]


def interval_area_bbox(top: np.ndarray, bot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas (n,) and COCO boxes (n, 4) ``[x, y, w, h]`` of masks given as intervals."""
    n, width = top.shape
    lens = (bot.astype(np.int32) - top).clip(0)
    area = lens.sum(axis=1).astype(np.float64)
    nonempty = lens > 0
    anyc = nonempty.any(axis=1)
    x0 = np.argmax(nonempty, axis=1)
    x1 = width - np.argmax(nonempty[:, ::-1], axis=1)
    big = np.iinfo(np.int16).max
    y0 = np.where(nonempty, top, big).min(axis=1)
    y1 = np.where(nonempty, bot, -1).max(axis=1)
    box = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float64)
    box[~anyc] = 0.0
    return area, box


# ---------------------------------------------------------------------------
# the generator


def _unit_vertices(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counter-clockwise unit-frame vertices (n, MAX_VERTICES, 2), padded by repeating the last one."""
    n = len(kind)
    k = rng.integers(5, MAX_VERTICES + 1, size=n)
    jitter = rng.uniform(-0.3, 0.3, size=(n, MAX_VERTICES))
    start = rng.uniform(0, 2 * np.pi, size=n)
    radial = rng.uniform(0.75, 1.0, size=(n, MAX_VERTICES))
    j = np.arange(MAX_VERTICES)
    jj = np.minimum(j[None, :], k[:, None] - 1)  # pad: repeat the last vertex
    ang = start[:, None] + (jj + np.take_along_axis(jitter, jj, 1)) * (2 * np.pi / k[:, None])
    r = np.take_along_axis(radial, jj, 1)
    v = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=2)
    rect = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]] + [[1, -1]] * (MAX_VERTICES - 4), dtype=np.float64)
    v[kind == RECTANGLE] = rect
    v[kind == ELLIPSE] = 0.0
    return v


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Instances:
    """Ground-truth instances, arrays of length G: shape, class and placement on images.

    ``kind, cx, cy, a, b, theta, verts`` as in :func:`_shape_intervals`; ``category``
    the class id, ``image`` the image id, ``ann_id`` the annotation id and
    ``ann_order`` the instances in annotation-id order (:func:`place_on_images`).
    """

    category: np.ndarray
    kind: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    verts: np.ndarray
    image: np.ndarray
    ann_id: np.ndarray
    ann_order: np.ndarray
    n_images: int


def check_params(n_masks: int, n_classes: int, *, seed: int, image_size: int, feature_dim: int,
                 with_pred_iou: bool) -> dict:
    """Validate a generator's common parameters (ValueError) and return them as the ``params`` dict."""
    n_masks, n_classes, image_size, feature_dim = int(n_masks), int(n_classes), int(image_size), int(feature_dim)
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if n_masks < n_classes:
        raise ValueError(f"n_masks ({n_masks}) must be >= n_classes ({n_classes}): every class gets a mask")
    if not 16 <= image_size <= 4096:
        raise ValueError(f"image_size must be in [16, 4096], got {image_size}")
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return {"seed": int(seed), "masks": n_masks, "classes": n_classes, "image_size": image_size,
            "feature_dim": feature_dim, "pred_iou": bool(with_pred_iou), "version": __version__}


def place_on_images(G: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Group G instances 1 + Poisson(3) to an image, in a random order.

    Returns ``(image, ann_order, ann_id, n_images)``: image id (1..n_images) of each
    instance, the instances sorted by annotation id, and the annotation ids (1..G,
    by image, then by position in the image).
    """
    order = rng.permutation(G)
    per_image = 1 + rng.poisson(INSTANCES_PER_IMAGE_POISSON, size=G)
    cum = np.cumsum(per_image)
    n_images = int(np.searchsorted(cum, G) + 1)
    image_of_slot = np.repeat(np.arange(1, n_images + 1), per_image[:n_images])[:G]
    gt_image = np.empty(G, dtype=np.int64)
    gt_image[order] = image_of_slot
    # annotation ids: by image, then by position in the image
    ann_order = np.lexsort((order.argsort(), gt_image))
    gt_ann_id = np.empty(G, dtype=np.int64)
    gt_ann_id[ann_order] = np.arange(1, G + 1)
    return gt_image, ann_order, gt_ann_id, n_images


def render_masks(inst: Instances, p_gt: np.ndarray, direction: np.ndarray, p_phi: np.ndarray,
                 p_target: np.ndarray, S: int, *, progress: bool | None = None):
    """Rasterise the instances and derive one prediction per entry of ``p_gt``.

    Prediction ``i`` is instance ``p_gt[i]`` moved along ``direction[i]`` (shift in
    radii towards angle ``p_phi[i]``, log-scale, log-aspect, rotation; rows already
    scaled by :data:`STEP_SCALE`) by the step, found by bisection, whose IoU with the
    instance is closest to ``p_target[i]``. No randomness.

    Returns
    -------
    gt_rle : list of str
        Compressed RLE counts of each instance.
    gt_area, gt_box : ndarray, shapes (G,) and (G, 4)
    p_rle : list of str
        Compressed RLE counts of each prediction.
    true_iou : ndarray, shape (N,)
        Exact IoU of each prediction with the best same-class instance of its image.
    """
    gt_rle: list[str] = []
    p_rle: list[str] = []
    true_iou = np.empty(len(p_gt))
    for kind, *rest in render_chunks(inst, p_gt, direction, p_phi, p_target, S, progress=progress):
        if kind == "gt":
            gt_rle.extend(rest[1])
        elif kind == "gt_done":
            gt_area, gt_box = rest
        else:
            sl, rles, iou = rest
            p_rle.extend(rles)
            true_iou[sl] = iou
    return gt_rle, gt_area, gt_box, p_rle, true_iou


def render_chunks(inst: Instances, p_gt: np.ndarray, direction: np.ndarray, p_phi: np.ndarray,
                  p_target: np.ndarray, S: int, *, progress: bool | None = None):
    """:func:`render_masks` a chunk at a time, holding no RLE string: yields
    ``("gt", slice, rles)`` per chunk of instances, then ``("gt_done", gt_area, gt_box)``,
    then ``("pred", slice, rles, true_iou)`` per chunk of predictions."""
    G, N = len(inst.kind), len(p_gt)
    gt_cat, gt_image = inst.category, inst.image
    gt_kind, gt_cx, gt_cy, gt_a, gt_b, gt_theta, gt_verts = (inst.kind, inst.cx, inst.cy, inst.a, inst.b,
                                                             inst.theta, inst.verts)
    n_classes = int(gt_cat.max()) if G else 0
    bar = tqdm(total=G + N, desc="synth", unit="mask", disable=None if progress is None else not progress)
    # ground truth: intervals (kept for matching) and RLE; rows 0..S fit a byte up to S = 255
    small = np.uint8 if S <= 255 else np.int16
    gt_top = np.empty((G, S), dtype=small)
    gt_bot = np.empty((G, S), dtype=small)
    gt_area = np.empty(G)
    gt_box = np.empty((G, 4))
    for s0 in range(0, G, CHUNK):
        sl = slice(s0, min(G, s0 + CHUNK))
        t, b = _shape_intervals(gt_kind[sl], gt_cx[sl], gt_cy[sl], gt_a[sl], gt_b[sl], gt_theta[sl],
                                gt_verts[sl], S, S)
        gt_top[sl], gt_bot[sl] = t, b
        gt_area[sl], gt_box[sl] = interval_area_bbox(t, b)
        yield "gt", sl, intervals_to_rle(t, b, S)
        bar.update(sl.stop - sl.start)
    if (gt_area == 0).any():  # pragma: no cover - excluded by MIN_AXIS and centre placement
        raise RuntimeError("synthetic ground-truth instance with no pixels")
    yield "gt_done", gt_area, gt_box

    # same-class instances of each image, for the exact best match
    key = gt_image * (n_classes + 1) + gt_cat
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]

    for s0 in range(0, N, CHUNK):
        sl = slice(s0, min(N, s0 + CHUNK))
        g = p_gt[sl]
        d = direction[sl]
        rad = np.sqrt(gt_a[g] * gt_b[g])
        cphi, sphi = np.cos(p_phi[sl]), np.sin(p_phi[sl])
        gt_t, gt_b_ = gt_top[g], gt_bot[g]

        def perturb(step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cx = np.clip(gt_cx[g] + step * d[:, 0] * rad * cphi, 2, S - 2)
            cy = np.clip(gt_cy[g] + step * d[:, 0] * rad * sphi, 2, S - 2)
            a = np.clip(gt_a[g] * np.exp(step * (d[:, 1] + d[:, 2])), MIN_AXIS, S)
            b = np.clip(gt_b[g] * np.exp(step * (d[:, 1] - d[:, 2])), MIN_AXIS, S)
            th = gt_theta[g] + step * d[:, 3]
            return _shape_intervals(gt_kind[g], cx, cy, a, b, th, gt_verts[g], S, S)

        target = p_target[sl]
        lo = np.zeros(len(g))
        hi = np.ones(len(g))
        iou_lo = np.ones(len(g))
        iou_hi = interval_iou(*perturb(hi), gt_t, gt_b_)
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            iou_mid = interval_iou(*perturb(mid), gt_t, gt_b_)
            above = iou_mid >= target
            lo = np.where(above, mid, lo)
            iou_lo = np.where(above, iou_mid, iou_lo)
            hi = np.where(above, hi, mid)
            iou_hi = np.where(above, iou_hi, iou_mid)
        step = np.where(np.abs(iou_lo - target) <= np.abs(iou_hi - target), lo, hi)
        top, bot = perturb(step)
        # exact IoU with the best same-class instance of the image
        pk = gt_image[g] * (n_classes + 1) + gt_cat[g]
        start = np.searchsorted(sorted_key, pk, side="left")
        stop = np.searchsorted(sorted_key, pk, side="right")
        best = np.zeros(len(g))
        for k in range(int((stop - start).max())):
            has = start + k < stop
            idx = by_key[np.minimum(start + k, G - 1)]
            v = interval_iou(top, bot, gt_top[idx], gt_bot[idx])
            best = np.where(has, np.maximum(best, v), best)
        area = (bot.astype(np.int32) - top).sum(axis=1)
        if (area == 0).any():  # pragma: no cover - excluded by MIN_AXIS and centre clipping
            raise RuntimeError("synthetic prediction with no pixels")
        yield "pred", sl, intervals_to_rle(top, bot, S), best
        bar.update(sl.stop - sl.start)
    bar.close()


def coco_records(desc: str, params: dict, inst: Instances, gt_rle: list, gt_area: np.ndarray, gt_box: np.ndarray,
                 p_gt: np.ndarray, p_rle: list, score: np.ndarray, pred_iou: np.ndarray | None,
                 n_classes: int) -> tuple[dict, list, np.ndarray]:
    """COCO ground truth and results of a synthetic set.

    ``desc`` goes into ``info.description``, ``params`` (less ``version``) into
    ``info.crowdprop_synth``; ``pred_iou`` None leaves the field out. Returns
    ``(gt, predictions, out)``: predictions are in file order (by image, then
    score descending) with ids 1..N, and ``out[k]`` is the generation index of
    the record with id ``k + 1``.
    """
    S = params["image_size"]
    gt_image, gt_cat, gt_ann_id = inst.image, inst.category, inst.ann_id
    p_image = gt_image[p_gt]
    out = np.lexsort((-score, p_image))  # file order: by image, then score descending

    size = [S, S]
    cats = [{"id": k, "name": f"synthetic-class-{k}", "supercategory": "synthetic"} for k in range(1, n_classes + 1)]
    images = [{"id": i, "file_name": f"synthetic_{i:08d}.png", "height": S, "width": S, "coco_url": ""}
              for i in range(1, inst.n_images + 1)]
    anns = []
    for j in inst.ann_order.tolist():
        anns.append({"id": int(gt_ann_id[j]), "image_id": int(gt_image[j]), "category_id": int(gt_cat[j]),
                     "segmentation": {"size": size, "counts": gt_rle[j]}, "area": float(gt_area[j]),
                     "bbox": gt_box[j].tolist(), "iscrowd": 0})
    gt = {
        "info": {"description": desc, "version": __version__, "synthetic": True,
                 "crowdprop_synth": {k: v for k, v in params.items() if k != "version"}},
        "licenses": [],
        "images": images,
        "categories": cats,
        "annotations": anns,
    }
    preds = []
    img_l, cat_l = p_image[out].tolist(), gt_cat[p_gt][out].tolist()
    sc_l = score[out].tolist()
    pi_l = pred_iou[out].tolist() if pred_iou is not None else None
    for k, j in enumerate(out.tolist()):
        rec = {"id": k + 1, "image_id": img_l[k], "category_id": cat_l[k],
               "segmentation": {"size": size, "counts": p_rle[j]}, "score": sc_l[k]}
        if pi_l is not None:
            rec["pred_iou"] = pi_l[k]
        preds.append(rec)
    return gt, preds, out


def _draw_latent(params: dict, rng: np.random.Generator) -> SimpleNamespace:
    """Every random number of a set but the per-mask noise: classes, modes, instances, and
    each prediction's instance, target IoU and perturbation direction (the first draws
    from ``rng``, in this order)."""
    n_masks, n_classes, S, feature_dim = params["masks"], params["classes"], params["image_size"], params["feature_dim"]

    # classes: Zipf-like sizes, at least one mask each, rank order shuffled over ids
    rank = rng.permutation(n_classes)
    share = 1.0 / (rank + 1.0)
    n_class = 1 + rng.multinomial(n_masks - n_classes, share / share.sum())

    # modes
    mode_cat_l, mode_size_l = [], []
    for ci, nc in enumerate(n_class):
        m = int(min(nc, np.clip(round(math.sqrt(nc) / 2), 5, 50)))
        sizes = 1 + rng.multinomial(nc - m, rng.dirichlet(np.ones(m)))
        mode_cat_l.append(np.full(m, ci + 1))
        mode_size_l.append(sizes)
    mode_category = np.concatenate(mode_cat_l).astype(np.int64)
    mode_size = np.concatenate(mode_size_l).astype(np.int64)
    M = len(mode_size)
    kind_p = np.array([k[1] for k in MODE_KINDS])
    mk = rng.choice(len(MODE_KINDS), size=M, p=kind_p / kind_p.sum())
    lo_l = np.array([k[2] for k in MODE_KINDS])[mk]
    hi_l = np.array([k[3] for k in MODE_KINDS])[mk]
    mode_level = rng.uniform(lo_l, hi_l)
    mode_spread = np.array([k[4] for k in MODE_KINDS])[mk]
    mode_kind = np.array([k[0] for k in MODE_KINDS])[mk]
    shape_p = np.array([s[1] for s in SHAPES])
    mode_shape = rng.choice(len(SHAPES), size=M, p=shape_p / shape_p.sum())
    mode_radius = S * rng.uniform(0.06, 0.2, size=M)
    mode_aspect = np.exp(rng.normal(0, 0.4, size=M))
    mode_theta = rng.uniform(0, np.pi, size=M)
    mode_profile = np.stack([np.abs(rng.normal(0, 1, M)), rng.normal(0, 1, M), rng.normal(0, 0.5, M),
                             rng.normal(0, 0.3, M)], axis=1)
    class_center = rng.normal(0, CLASS_SPREAD, size=(n_classes, feature_dim))
    mode_center = class_center[mode_category - 1] + rng.normal(0, MODE_SPREAD, size=(M, feature_dim))
    score_bias = rng.normal(0, SCORE_MODE_BIAS, size=M)
    piou_bias = rng.normal(0, PRED_IOU_MODE_BIAS, size=M)

    # ground-truth instances: matched ones per mode, then missed ones
    n_gt_mode = np.maximum(1, np.rint(mode_size / PREDICTIONS_PER_INSTANCE).astype(np.int64))
    n_gt_mode = np.minimum(n_gt_mode, mode_size)
    n_missed_mode = rng.binomial(n_gt_mode, MISSED_SHARE)
    gt_mode = np.concatenate([np.repeat(np.arange(M), n_gt_mode), np.repeat(np.arange(M), n_missed_mode)])
    G = len(gt_mode)
    gt_cat = mode_category[gt_mode]
    gt_kind = mode_shape[gt_mode]
    r = mode_radius[gt_mode] * np.exp(rng.normal(0, 0.15, G))
    asp = mode_aspect[gt_mode] * np.exp(rng.normal(0, 0.1, G))
    gt_a = np.clip(r * np.sqrt(asp), MIN_AXIS, S / 2)
    gt_b = np.clip(r / np.sqrt(asp), MIN_AXIS, S / 2)
    gt_theta = mode_theta[gt_mode] + rng.normal(0, 0.2, G)
    gt_cx = rng.uniform(2, S - 2, G)
    gt_cy = rng.uniform(2, S - 2, G)
    gt_verts = _unit_vertices(gt_kind, rng)
    # images: 1 + Poisson instances each, over a random order of instances
    gt_image, ann_order, gt_ann_id, n_images = place_on_images(G, rng)
    inst = Instances(category=gt_cat, kind=gt_kind, cx=gt_cx, cy=gt_cy, a=gt_a, b=gt_b, theta=gt_theta,
                     verts=gt_verts, image=gt_image, ann_id=gt_ann_id, ann_order=ann_order, n_images=n_images)

    # predictions: mode -> instance of that mode (each matched instance at least once)
    N = n_masks
    p_mode = np.repeat(np.arange(M), mode_size)
    gt_start = np.concatenate([[0], np.cumsum(n_gt_mode)[:-1]])  # matched instances of mode m
    first = np.concatenate([[0], np.cumsum(mode_size)[:-1]])
    within = np.arange(N) - first[p_mode]
    pick = np.where(within < n_gt_mode[p_mode], within,
                    np.floor(rng.random(N) * n_gt_mode[p_mode]).astype(np.int64))
    p_gt = gt_start[p_mode] + pick
    p_target = np.clip(mode_level[p_mode] + mode_spread[p_mode] * rng.normal(0, 1, N), 0.0, 1.0)
    direction = mode_profile[p_mode] + 0.5 * rng.normal(0, 1, (N, 4))
    direction[:, 0] = np.abs(direction[:, 0])
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    direction *= STEP_SCALE
    p_phi = rng.uniform(0, 2 * np.pi, N)
    return SimpleNamespace(N=N, M=M, G=G, n_images=n_images, n_classes=n_classes, inst=inst, p_mode=p_mode,
                           p_gt=p_gt, p_target=p_target, direction=direction, p_phi=p_phi,
                           mode_category=mode_category, mode_kind=mode_kind, mode_level=mode_level,
                           mode_center=mode_center, score_bias=score_bias, piou_bias=piou_bias, gt_ann_id=gt_ann_id)


def make_synthetic(n_masks: int, n_classes: int, *, seed: int, image_size: int = 64, feature_dim: int = 64,
                   with_pred_iou: bool = True, progress: bool | None = None) -> SyntheticSet:
    """Make a synthetic prediction set with ground truth and latent modes.

    Parameters
    ----------
    n_masks : int
        Number of predictions N (>= n_classes).
    n_classes : int
        Number of classes C (>= 1).
    seed : int
        Seed of the one ``numpy.random.Generator`` used.
    image_size : int
        Side of the square images in pixels (>= 16).
    feature_dim : int
        Feature dimension D (>= 1).
    with_pred_iou : bool
        Give every prediction a ``pred_iou`` field.
    progress : bool or None
        Show a progress bar; None: only when stderr is a terminal.

    Returns
    -------
    SyntheticSet
        See the module docstring for the generative model.
    """
    params = check_params(n_masks, n_classes, seed=seed, image_size=image_size, feature_dim=feature_dim,
                          with_pred_iou=with_pred_iou)
    n_masks, n_classes, S, feature_dim = params["masks"], params["classes"], params["image_size"], params["feature_dim"]
    rng = np.random.default_rng(int(seed))
    lat = _draw_latent(params, rng)
    N, M, G, n_images, inst, p_mode, p_gt = lat.N, lat.M, lat.G, lat.n_images, lat.inst, lat.p_mode, lat.p_gt
    p_target, direction, p_phi, gt_ann_id = lat.p_target, lat.direction, lat.p_phi, lat.gt_ann_id
    mode_category, mode_kind, mode_level, mode_center = lat.mode_category, lat.mode_kind, lat.mode_level, lat.mode_center
    score_bias, piou_bias = lat.score_bias, lat.piou_bias
    feat_noise = rng.standard_normal((N, feature_dim), dtype=np.float32)
    score_noise = rng.normal(0, SCORE_NOISE, N)
    piou_noise = rng.normal(0, PRED_IOU_NOISE, N)

    gt_rle, gt_area, gt_box, p_rle, true_iou = render_masks(inst, p_gt, direction, p_phi, p_target, S,
                                                            progress=progress)
    score = np.round(_sigmoid(SCORE_OFFSET + SCORE_SLOPE * (true_iou - 0.5) + score_bias[p_mode] + score_noise), 5)
    pred_iou = np.round(np.clip(true_iou + piou_bias[p_mode] + piou_noise, 0.0, 1.0), 5)
    gt, preds, out = coco_records(description(params), params, inst, gt_rle, gt_area, gt_box, p_gt, p_rle, score,
                                  pred_iou if with_pred_iou else None, n_classes)
    features = mode_center[p_mode[out]].astype(np.float32) + np.float32(FEATURE_NOISE) * feat_noise
    log.info("made %d synthetic predictions, %d instances, %d images, %d classes, %d modes",
             N, G, n_images, n_classes, M)
    return SyntheticSet(
        gt=gt, predictions=preds, features=np.ascontiguousarray(features), true_iou=true_iou[out],
        target_iou=p_target[out], mode=p_mode[out], source_ann_id=gt_ann_id[p_gt][out],
        mode_category=mode_category, mode_kind=mode_kind, mode_level=mode_level, params=params,
    )


# ---------------------------------------------------------------------------
# writing


def readme_head(synth: SetSummary, latent_lines: list[str]) -> list[str]:
    """README.txt up to the list of files, with ``latent_lines`` describing latent.npz."""
    p = synth.params
    n_gt = len(synth.gt["annotations"])
    return [
        "SYNTHETIC DATA - not real images, not real annotations.",
        "",
        description(p),
        f"Same files again: {command_line(p)}",
        "",
        "Files",
        f"  gt.json           COCO instances ground truth: {len(synth.gt['images'])} images "
        f"({p['image_size']}x{p['image_size']}, no pixels on disk), {p['classes']} categories, {n_gt} instances.",
        f"  predictions.json  COCO results: {p['masks']} masks with score"
        + (", pred_iou" if p["pred_iou"] else "") + " and id (1..N), ordered by image then score.",
        f"  features.npy      float32 array ({p['masks']}, {p['feature_dim']}); row i belongs to the record with id i+1.",
        *latent_lines,
        "",
    ]


def readme_correlations(synth: SetSummary) -> str:
    """The README line giving the Pearson correlations of score (and pred_iou) with the true IoU.

    ``synth.predictions`` gives the scores, or ``synth.scores`` (score, pred_iou arrays in
    file order) when the set was written without holding its records."""
    scores = getattr(synth, "scores", None)
    if scores is None and isinstance(synth, SetFiles):
        scores = ([r["score"] for r in synth.predictions],
                  [r["pred_iou"] for r in synth.predictions] if synth.params["pred_iou"] else None)
    if scores is None:
        raise TypeError("a synthetic set's summary needs its predictions or their scores")
    score, piou = scores
    corr_s = _corr(score, synth.true_iou)
    return (f"  Pearson correlation with the true IoU here: score {corr_s:.3f}"
            + (f", pred_iou {_corr(piou, synth.true_iou):.3f}" if synth.params["pred_iou"] else "") + ".")


def readme_text(synth: SetSummary) -> str:
    lines = readme_head(synth, [
        "  latent.npz        per prediction (same order): id, true_iou (exact IoU with the best same-class",
        "                    instance), target_iou, mode, source_ann_id; per mode: mode_category, mode_kind,",
        "                    mode_level. The latent modes are the clusters label propagation should find.",
    ]) + [
        "How they were made (crowdprop.replay.synth)",
        "  Classes have Zipf-like sizes; each class is split into 5-50 latent modes. A mode is 'good'",
        "  (most IoU > 0.75), 'bad' (mostly wrong) or 'mixed', has a shape family (ellipse, rectangle,",
        "  convex polygon) and a feature centre. Each prediction is its ground-truth instance shifted,",
        "  scaled and rotated until its IoU is near a target drawn around its mode's level.",
        "  features = mode centre + Gaussian noise. score and pred_iou are noisy functions of the true IoU:",
        readme_correlations(synth),
        f"  Share of predictions with true IoU >= 0.5: {np.mean(synth.true_iou >= 0.5):.3f}.",
        "",
    ]
    return "\n".join(lines)


def _corr(x, y) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse an output folder that exists and is not an empty folder."""
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(out, None, None, "exists and is not a folder; give a new or empty folder")
        if any(out.iterdir()):
            raise InputError(out, None, None, "output folder is not empty; give a new or empty folder")
    return out


def write_synthetic(synth: SyntheticSet, out_dir: str | os.PathLike) -> Path:
    """Write ``synth`` into ``out_dir`` (created; must not exist or be empty).

    Files are written into a temporary folder next to ``out_dir`` that is
    renamed to ``out_dir`` at the end, so an interrupted write leaves nothing
    behind under ``out_dir``. Writes gt.json, predictions.json, features.npy,
    latent.npz and README.txt.
    """
    return write_set_files(out_dir, synth.gt, synth.predictions, synth.features, readme_text(synth), dict(
        id=np.arange(1, len(synth.predictions) + 1), true_iou=synth.true_iou, target_iou=synth.target_iou,
        mode=synth.mode, source_ann_id=synth.source_ann_id, mode_category=synth.mode_category,
        mode_kind=synth.mode_kind.astype(str), mode_level=synth.mode_level))


@contextlib.contextmanager
def _set_folder(out_dir: str | os.PathLike):
    """A temporary folder next to ``out_dir`` (new or empty) for the block to write into,
    renamed to ``out_dir`` when the block ends; removed if it fails."""
    out = check_output_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        check_output_dir(out)  # still new or empty: rename(2) replaces an empty folder
        try:
            os.replace(tmp, out)
        except OSError as e:
            raise InputError(out, None, None, f"cannot move the finished files into place: {e.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_set_files(out_dir: str | os.PathLike, gt: dict, predictions: list, features: np.ndarray, readme: str,
                    latent: dict) -> Path:
    """Write a synthetic set's five files (:data:`FILES`) into ``out_dir`` as a whole or not at all.

    ``latent`` holds the arrays of latent.npz. The files go into a temporary
    folder next to ``out_dir`` that is renamed to ``out_dir`` at the end.
    """
    with _set_folder(out_dir) as tmp:
        atomic_write_bytes(tmp / "gt.json", json.dumps(gt, separators=(",", ":")).encode("utf-8"))
        atomic_write_bytes(tmp / "predictions.json",
                           json.dumps(predictions, separators=(",", ":")).encode("utf-8"))
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, dtype=np.float32))
        atomic_write_bytes(tmp / "features.npy", buf.getvalue())
        buf = io.BytesIO()
        np.savez(buf, **latent)
        atomic_write_bytes(tmp / "latent.npz", buf.getvalue())
        atomic_write_text(tmp / "README.txt", readme)
    out = Path(out_dir)
    log.info("wrote synthetic set to %s", out)
    return out


STREAM_CHUNK = 65_536
"""Records (and feature rows) :func:`stream_synthetic` writes at a time."""


def _npy_header(f, shape: tuple, dtype) -> int:
    """Write the .npy header :func:`numpy.save` writes for an array of ``shape``; returns its length."""
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": tuple(shape)})
    return f.tell()


class _Strings:
    """Strings written one after another to a file, read back by index (through mmap)."""

    def __init__(self, path: Path, n: int):
        self.path, self.f = path, open(path, "wb")
        self.end = np.zeros(n + 1, dtype=np.int64)
        self.k = 0

    def extend(self, strings: list[str]) -> None:
        data = [s.encode("ascii") for s in strings]
        np.cumsum([len(b) for b in data], out=self.end[self.k + 1:self.k + 1 + len(data)])
        self.end[self.k + 1:self.k + 1 + len(data)] += self.end[self.k]
        self.f.write(b"".join(data))
        self.k += len(data)

    def reader(self):
        import mmap

        self.f.close()
        with open(self.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.end[-1] else b""
        end = self.end

        def get(i: int) -> str:
            return mm[end[i]:end[i + 1]].decode("ascii")
        return get


def _json_array(f, chunks) -> None:
    """Write ``[`` + the chunks' records + ``]`` exactly as ``json.dumps(all, separators=(",", ":"))``."""
    f.write(b"[")
    first = True
    for records in chunks:
        if not records:
            continue
        text = json.dumps(records, separators=(",", ":"))[1:-1]
        f.write((text if first else "," + text).encode("utf-8"))
        first = False
    f.write(b"]")


def stream_synthetic(n_masks: int, n_classes: int, out_dir: str | os.PathLike, *, seed: int, image_size: int = 64,
                     feature_dim: int = 64, with_pred_iou: bool = True, progress: bool | None = None) -> dict:
    """:func:`make_synthetic` then :func:`write_synthetic`, without holding the set.

    The same five files byte for byte (latent.npz's zip timestamps aside): the random
    numbers are drawn in the same order (the per-mask feature noise in chunks, which gives
    the same numbers as one draw), RLE strings go to scratch files as they are made, and
    the JSON files, features and latent arrays are written a chunk of
    :data:`STREAM_CHUNK` records at a time. Memory: the per-mask arrays (about 200 bytes a
    mask) and each instance's outline (``2 * image_size`` bytes), not the records. Returns
    ``{"predictions": N, "instances": G, "images": n_images}``.
    """
    params = check_params(n_masks, n_classes, seed=seed, image_size=image_size, feature_dim=feature_dim,
                          with_pred_iou=with_pred_iou)
    S, D = params["image_size"], params["feature_dim"]
    with _set_folder(out_dir) as tmp:
        rng = np.random.default_rng(int(seed))
        lat = _draw_latent(params, rng)
        N, G, inst = lat.N, lat.G, lat.inst
        # features, first pass: the noise term, drawn in chunks, rows in file order
        with open(tmp / "features.npy", "wb") as f:
            offset = _npy_header(f, (N, D), np.float32)
            for a in range(0, N, STREAM_CHUNK):
                f.write((np.float32(FEATURE_NOISE) * rng.standard_normal((min(N, a + STREAM_CHUNK) - a, D),
                                                                         dtype=np.float32)).tobytes())
        score_noise = rng.normal(0, SCORE_NOISE, N)
        piou_noise = rng.normal(0, PRED_IOU_NOISE, N)
        gt_rle, p_rle = _Strings(tmp / ".gt_rle", G), _Strings(tmp / ".p_rle", N)
        true_iou = np.empty(N)
        for kind, *rest in render_chunks(inst, lat.p_gt, lat.direction, lat.p_phi, lat.p_target, S,
                                         progress=progress):
            if kind == "gt":
                gt_rle.extend(rest[1])
            elif kind == "gt_done":
                gt_area, gt_box = rest
            else:
                p_rle.extend(rest[1])
                true_iou[rest[0]] = rest[2]
        score = np.round(_sigmoid(SCORE_OFFSET + SCORE_SLOPE * (true_iou - 0.5) + lat.score_bias[lat.p_mode]
                                  + score_noise), 5)
        pred_iou = np.round(np.clip(true_iou + lat.piou_bias[lat.p_mode] + piou_noise, 0.0, 1.0), 5)
        p_image = inst.image[lat.p_gt]
        order = np.lexsort((-score, p_image))  # file order: by image, then score descending
        # features, second pass: add each row's mode centre
        row = D * 4
        with open(tmp / "features.npy", "r+b") as fr:
            for a in range(0, N, STREAM_CHUNK):
                b = min(N, a + STREAM_CHUNK)
                fr.seek(offset + a * row)
                noise = np.frombuffer(fr.read((b - a) * row), dtype=np.float32).reshape(b - a, D)
                fr.seek(offset + a * row)
                fr.write((lat.mode_center[lat.p_mode[order[a:b]]].astype(np.float32) + noise).tobytes())
        size = [S, S]
        get = p_rle.reader()
        cat_of = inst.category[lat.p_gt]

        def prediction_chunks():
            for a in range(0, N, STREAM_CHUNK):
                idx = order[a:a + STREAM_CHUNK]
                img_l, cat_l, sc_l = p_image[idx].tolist(), cat_of[idx].tolist(), score[idx].tolist()
                pi_l = pred_iou[idx].tolist()
                recs = []
                for k, j in enumerate(idx.tolist()):
                    rec = {"id": a + k + 1, "image_id": img_l[k], "category_id": cat_l[k],
                           "segmentation": {"size": size, "counts": get(j)}, "score": sc_l[k]}
                    if with_pred_iou:
                        rec["pred_iou"] = pi_l[k]
                    recs.append(rec)
                yield recs

        with open(tmp / "predictions.json", "wb") as f:
            _json_array(f, prediction_chunks())
        del get
        os.unlink(tmp / ".p_rle")
        get = gt_rle.reader()

        def annotation_chunks():
            for a in range(0, G, STREAM_CHUNK):
                idx = inst.ann_order[a:a + STREAM_CHUNK]
                yield [{"id": int(inst.ann_id[j]), "image_id": int(inst.image[j]), "category_id": int(inst.category[j]),
                        "segmentation": {"size": size, "counts": get(j)}, "area": float(gt_area[j]),
                        "bbox": gt_box[j].tolist(), "iscrowd": 0} for j in idx.tolist()]

        def image_chunks():
            for a in range(1, inst.n_images + 1, STREAM_CHUNK):
                yield [{"id": i, "file_name": f"synthetic_{i:08d}.png", "height": S, "width": S, "coco_url": ""}
                       for i in range(a, min(inst.n_images + 1, a + STREAM_CHUNK))]

        info = {"description": description(params), "version": __version__, "synthetic": True,
                "crowdprop_synth": {k: v for k, v in params.items() if k != "version"}}
        cats = [{"id": k, "name": f"synthetic-class-{k}", "supercategory": "synthetic"}
                for k in range(1, lat.n_classes + 1)]
        with open(tmp / "gt.json", "wb") as f:
            f.write(b'{"info":' + json.dumps(info, separators=(",", ":")).encode() + b',"licenses":[],"images":')
            _json_array(f, image_chunks())
            f.write(b',"categories":' + json.dumps(cats, separators=(",", ":")).encode() + b',"annotations":')
            _json_array(f, annotation_chunks())
            f.write(b"}")
        del get
        os.unlink(tmp / ".gt_rle")
        np.savez(tmp / "latent.npz", id=np.arange(1, N + 1), true_iou=true_iou[order], target_iou=lat.p_target[order],
                 mode=lat.p_mode[order], source_ann_id=lat.gt_ann_id[lat.p_gt][order],
                 mode_category=lat.mode_category, mode_kind=lat.mode_kind.astype(str), mode_level=lat.mode_level)
        summary = SimpleNamespace(params=params, gt={"images": range(inst.n_images), "annotations": range(G)},
                                  scores=(score[order], pred_iou[order]), true_iou=true_iou[order])
        atomic_write_text(tmp / "README.txt", readme_text(summary))
    log.info("wrote %d synthetic predictions, %d instances, %d images to %s", N, G, inst.n_images, out_dir)
    return {"predictions": N, "instances": G, "images": inst.n_images}
