"""A second synthetic generator: impure clusters, quality that varies within and across classes.

``crowdprop synth --generator mixed``. Same files and formats as
:mod:`crowdprop.replay.synth` (the ``modes`` generator, whose latent modes are
tight and mostly pure), so everything downstream reads them unchanged, but with
structure that a verification policy cannot lean on:

- a feature-space cluster mixes correct and wrong masks, in a share that varies
  smoothly across feature space;
- classes differ strongly in difficulty (40 % to 95 % correct);
- score and pred_iou are noisy, heavy-tailed, class-biased signals of the true IoU;
- many masks sit just above or just below the correctness threshold (IoU 0.75).

Nothing here is a real image or a real annotation; every file says so.

Generative model
----------------
classes
    ``n_classes`` classes with log-normal sizes (share ``exp(N(0, 1))``, at least
    one mask each). Class ``c`` is given a target share of correct masks
    ``p_c = 0.40 + 0.55 (r_c + U) / C`` over a random rank ``r_c``, so the targets
    are spread evenly over [0.40, 0.95] whatever the number of classes.
latent position
    Every mask has a latent position ``z`` in ``R^L`` (``L`` = :data:`LATENT_DIM`)
    drawn from its class's mixture of ``clip(round(sqrt(n_c) / 3), 3, 40)``
    overlapping Gaussian groups (centres ``N(0, 1)``, spread :data:`GROUP_SPREAD`,
    Dirichlet(2) weights), and a nuisance position ``u`` in ``R^2`` from 3 tight
    "viewpoint" modes per class that have nothing to do with quality.
correctness
    ``P(correct | z) = sigmoid(a_c + f_c(z))`` where ``f_c`` is a smooth random
    function (random Fourier features, length scale :data:`FIELD_LENGTH`, amplitude
    ``A_c ~ U(1.0, 2.5)``) and ``a_c`` is solved so that the class's mean
    probability is ``p_c``. Each mask is correct with that probability, so a
    group, and any cluster of nearby masks, holds both kinds in a share that
    drifts across the class.
target IoU
    Per class a borderline share ``b_c ~ U(0.15, 0.35)`` and a gross-error share
    ``g_c ~ U(0.3, 0.8)``. A correct mask aims at ``U(0.75, 0.80)`` with
    probability ``b_c``, else ``0.80 + 0.17 Beta(2, 2)``; a wrong one at
    ``U(0.70, 0.75)`` with probability ``b_c``, else a gross error
    ``0.5 Beta(1.5, 3)`` with probability ``g_c``, else a near miss
    ``0.40 + 0.30 Beta(2, 2)``. The true IoU distribution has a mode near 0.85,
    one near 0.15 and a band on both sides of 0.75. Masks are made from their
    ground-truth instance by :func:`crowdprop.replay.synth.render_masks` along a
    direction drawn around their group's error profile; the recorded ``true_iou``
    is exact, so pixel rounding moves some borderline masks across 0.75.
score
    ``sigmoid(s_c + k_c (iou - 0.6) + 0.7 h_c(z) + t_3)``: class bias
    ``s_c ~ N(0.3, 0.6^2)``, +2.5 for about a quarter of the classes (over-confident
    detectors); class slope ``k_c ~ U(1, 3.5)``; ``h_c`` a second smooth field
    (appearance that sways the detector, not the quality); ``t_3`` Student-t noise
    with 3 degrees of freedom (heavy tails).
pred_iou
    ``clip(m_c iou + (1 - m_c) 0.8 + d_c + 0.15 t_3, 0, 1)`` with ``m_c ~ U(0.3, 0.9)``
    (compressed towards 0.8: over-confident on bad masks), ``d_c ~ N(0, 0.06^2)``;
    5 % of masks are confidently wrong (``pred_iou ~ U(0.85, 1)`` whatever their IoU).
features
    ``(N, feature_dim)`` float32: class centre ``N(0, 1)`` per dimension +
    ``W_c z`` + ``V_c u`` + ``N(0, 0.25^2)`` per dimension, with random maps
    ``W_c`` (entries ``N(0, 0.5^2)``) and ``V_c`` (``N(0, 0.2^2)``). The features
    carry the position, hence ``P(correct | z)``, but not the per-mask draw: no
    function of the features separates correct from wrong masks.

Ground truth: per class ``max(1, round(n_c / 1.25))`` instances that predictions
come from (each at least once) plus ~10 % missed ones; shape family per instance
from class-specific shares (ellipse, rectangle, convex polygon), log-normal sizes
around a class size; grouped 1 + Poisson(3) to an image like the modes generator.

All randomness comes from one ``numpy.random.Generator`` seeded with ``seed``,
drawn before the chunked rendering, so results do not depend on chunk sizes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .synth import (MIN_AXIS, MISSED_SHARE, PREDICTIONS_PER_INSTANCE, STEP_SCALE, Instances, SetFiles, _sigmoid,
                    _unit_vertices, check_params, coco_records, description, place_on_images, readme_correlations,
                    readme_head, render_masks, write_set_files)

log = logging.getLogger(__name__)

CORRECT_IOU = 0.75
"""The correctness threshold the IoU targets are laid around (``campaign.correct_iou``'s default)."""
CLASS_RATE_LOW, CLASS_RATE_HIGH = 0.40, 0.95
LATENT_DIM = 3
GROUP_SPREAD = 0.7
FIELD_LENGTH = 1.0
FIELD_FEATURES = 24
AMPLITUDE_LOW, AMPLITUDE_HIGH = 1.0, 2.5
NUISANCE_DIM, NUISANCE_MODES, NUISANCE_SPREAD, NUISANCE_NOISE = 2, 3, 1.5, 0.3
LATENT_MAP, NUISANCE_MAP, FEATURE_NOISE = 0.5, 0.2, 0.25
BORDER_WIDTH = 0.05
OVERCONFIDENT_SHARE, OVERCONFIDENT_BIAS = 0.25, 2.5
SCORE_FIELD, SCORE_NOISE = 0.7, 1.0
PRED_IOU_NOISE, PRED_IOU_OUTLIERS = 0.15, 0.05
TAIL_DF = 3
SHAPE_SHARES = 3  # ellipse, rectangle, polygon (crowdprop.replay.synth.SHAPES order)


@dataclass
class MixedSet(SetFiles):
    """A synthetic set from the mixed generator.

    Attributes
    ----------
    gt, predictions, features, true_iou, target_iou
        As in :class:`crowdprop.replay.synth.SetFiles` (file order, ids 1..N).
    source_ann_id : ndarray, shape (N,), int64
        Ground-truth annotation the prediction was derived from.
    p_correct : ndarray, shape (N,)
        ``P(correct | z)`` of each mask: the share of correct masks around it.
    correct_drawn : ndarray, shape (N,), bool
        Whether the mask was drawn correct (aimed above 0.75); the truth is ``true_iou > 0.75``.
    group : ndarray, shape (N,), int64
        Latent group of each mask (index into ``group_category``); groups overlap.
    latent : ndarray, shape (N, LATENT_DIM), float32
        Latent position ``z``.
    group_category : ndarray, shape (K,), int64
    class_rate : ndarray, shape (C,)
        Target share of correct masks of class ``k + 1``.
    class_amplitude, class_score_bias, class_score_slope, class_piou_slope : ndarray, shape (C,)
    params : dict
    """

    source_ann_id: np.ndarray = field(repr=False)
    p_correct: np.ndarray = field(repr=False)
    correct_drawn: np.ndarray = field(repr=False)
    group: np.ndarray = field(repr=False)
    latent: np.ndarray = field(repr=False)
    group_category: np.ndarray = field(repr=False)
    class_rate: np.ndarray = field(repr=False)
    class_amplitude: np.ndarray = field(repr=False)
    class_score_bias: np.ndarray = field(repr=False)
    class_score_slope: np.ndarray = field(repr=False)
    class_piou_slope: np.ndarray = field(repr=False)
    params: dict = field(default_factory=dict)


def _field(z: np.ndarray, cls: np.ndarray, omega: np.ndarray, phase: np.ndarray, weight: np.ndarray,
           chunk: int = 65536) -> np.ndarray:
    """Random Fourier field per class: ``sqrt(2/R) sum_r w_cr cos(z . omega_cr + b_cr)``, unit variance.

    ``z`` (N, L), ``cls`` (N,) class index, ``omega`` (C, L, R), ``phase`` and ``weight`` (C, R).
    """
    n, r = len(z), omega.shape[2]
    out = np.empty(n)
    for a in range(0, n, chunk):
        sl = slice(a, min(n, a + chunk))
        c = cls[sl]
        arg = np.einsum("nl,nlr->nr", z[sl], omega[c]) + phase[c]
        out[sl] = np.sqrt(2.0 / r) * (weight[c] * np.cos(arg)).sum(axis=1)
    return out


def _solve_offset(f: np.ndarray, cls: np.ndarray, rate: np.ndarray, steps: int = 60) -> np.ndarray:
    """Per class ``a`` with ``mean(sigmoid(a + f))`` over the class equal to ``rate`` (bisection)."""
    C = len(rate)
    n = np.bincount(cls, minlength=C)
    lo, hi = np.full(C, -20.0), np.full(C, 20.0)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        mean = np.bincount(cls, weights=_sigmoid(mid[cls] + f), minlength=C) / np.maximum(n, 1)
        up = mean < rate
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return 0.5 * (lo + hi)


def _beta_between(rng: np.random.Generator, lo: float, width: float, a: float, b: float, n: int) -> np.ndarray:
    return lo + width * rng.beta(a, b, n)


def make_mixed(n_masks: int, n_classes: int, *, seed: int, image_size: int = 64, feature_dim: int = 64,
               with_pred_iou: bool = True, progress: bool | None = None) -> MixedSet:
    """Make a synthetic set with impure clusters and class-dependent, miscalibrated signals.

    Parameters and errors as :func:`crowdprop.replay.synth.make_synthetic`; see
    the module docstring for the generative model.
    """
    params = check_params(n_masks, n_classes, seed=seed, image_size=image_size, feature_dim=feature_dim,
                          with_pred_iou=with_pred_iou)
    params["generator"] = "mixed"
    N, C, S, D = params["masks"], params["classes"], params["image_size"], params["feature_dim"]
    L = LATENT_DIM
    rng = np.random.default_rng(params["seed"])

    # classes: sizes, target correct shares, amplitudes, signal distortions
    share = np.exp(rng.normal(0.0, 1.0, C))
    n_class = 1 + rng.multinomial(N - C, share / share.sum())
    class_rate = CLASS_RATE_LOW + (CLASS_RATE_HIGH - CLASS_RATE_LOW) * (rng.permutation(C) + rng.random(C)) / C
    amplitude = rng.uniform(AMPLITUDE_LOW, AMPLITUDE_HIGH, C)
    border = rng.uniform(0.15, 0.35, C)
    gross = rng.uniform(0.3, 0.8, C)
    score_bias = rng.normal(0.3, 0.6, C) + OVERCONFIDENT_BIAS * (rng.random(C) < OVERCONFIDENT_SHARE)
    score_slope = rng.uniform(1.0, 3.5, C)
    piou_slope = rng.uniform(0.3, 0.9, C)
    piou_bias = rng.normal(0.0, 0.06, C)
    omega = rng.normal(0.0, 1.0 / FIELD_LENGTH, (2, C, L, FIELD_FEATURES))  # quality field, score field
    phase = rng.uniform(0.0, 2 * np.pi, (2, C, FIELD_FEATURES))
    weight = rng.normal(0.0, 1.0, (2, C, FIELD_FEATURES))
    class_center = rng.normal(0.0, 1.0, (C, D)).astype(np.float32)
    latent_map = rng.normal(0.0, LATENT_MAP, (C, L, D)).astype(np.float32)
    nuisance_map = rng.normal(0.0, NUISANCE_MAP, (C, NUISANCE_DIM, D)).astype(np.float32)
    nuisance_center = rng.normal(0.0, NUISANCE_SPREAD, (C, NUISANCE_MODES, NUISANCE_DIM))
    shape_share = rng.dirichlet(np.ones(SHAPE_SHARES), C)
    class_radius = S * rng.uniform(0.07, 0.2, C)

    # latent groups: overlapping Gaussians in z, each with an error profile
    n_groups = np.minimum(n_class, np.clip(np.rint(np.sqrt(n_class) / 3), 3, 40).astype(np.int64))
    group_category = np.repeat(np.arange(1, C + 1), n_groups)
    K = len(group_category)
    group_first = np.concatenate([[0], np.cumsum(n_groups)[:-1]])
    group_center = rng.normal(0.0, 1.0, (K, L))
    group_profile = np.stack([np.abs(rng.normal(0, 1, K)), rng.normal(0, 1, K), rng.normal(0, 0.5, K),
                              rng.normal(0, 0.3, K)], axis=1)

    # masks in class order: group, positions, correctness, target IoU
    cls = np.repeat(np.arange(C), n_class)  # class index (category id - 1)
    group_weight = [rng.dirichlet(np.full(k, 2.0)) for k in n_groups.tolist()]
    local = np.concatenate([rng.choice(len(w), size=int(m), p=w) for w, m in zip(group_weight, n_class.tolist())])
    group = group_first[cls] + local
    z = group_center[group] + GROUP_SPREAD * rng.standard_normal((N, L))
    u = nuisance_center[cls, rng.integers(0, NUISANCE_MODES, N)] + NUISANCE_NOISE * rng.standard_normal(
        (N, NUISANCE_DIM))
    f_quality = amplitude[cls] * _field(z, cls, omega[0], phase[0], weight[0])
    f_score = _field(z, cls, omega[1], phase[1], weight[1])
    offset = _solve_offset(f_quality, cls, class_rate)
    p_correct = _sigmoid(offset[cls] + f_quality)
    correct = rng.random(N) < p_correct
    on_border = rng.random(N) < border[cls]
    is_gross = rng.random(N) < gross[cls]
    target = np.where(
        correct,
        np.where(on_border, rng.uniform(CORRECT_IOU, CORRECT_IOU + BORDER_WIDTH, N),
                 _beta_between(rng, 0.80, 0.17, 2.0, 2.0, N)),
        np.where(on_border, rng.uniform(CORRECT_IOU - BORDER_WIDTH, CORRECT_IOU, N),
                 np.where(is_gross, _beta_between(rng, 0.0, 0.5, 1.5, 3.0, N),
                          _beta_between(rng, 0.40, 0.30, 2.0, 2.0, N))))

    # ground truth: instances per class (predicted ones first, then missed ones)
    n_gt_class = np.minimum(n_class, np.maximum(1, np.rint(n_class / PREDICTIONS_PER_INSTANCE).astype(np.int64)))
    n_missed = rng.binomial(n_gt_class, MISSED_SHARE)
    gt_cls = np.concatenate([np.repeat(np.arange(C), n_gt_class), np.repeat(np.arange(C), n_missed)])
    G = len(gt_cls)
    gt_kind = (rng.random(G)[:, None] > np.cumsum(shape_share, axis=1)[gt_cls]).sum(axis=1)
    gt_kind = np.minimum(gt_kind, SHAPE_SHARES - 1)
    r = class_radius[gt_cls] * np.exp(rng.normal(0.0, 0.3, G))
    asp = np.exp(rng.normal(0.0, 0.5, G))
    inst_a = np.clip(r * np.sqrt(asp), MIN_AXIS, S / 2)
    inst_b = np.clip(r / np.sqrt(asp), MIN_AXIS, S / 2)
    inst_theta = rng.uniform(0.0, np.pi, G)
    inst_cx = rng.uniform(2, S - 2, G)
    inst_cy = rng.uniform(2, S - 2, G)
    inst_verts = _unit_vertices(gt_kind, rng)
    gt_image, ann_order, gt_ann_id, n_images = place_on_images(G, rng)
    inst = Instances(category=gt_cls + 1, kind=gt_kind, cx=inst_cx, cy=inst_cy, a=inst_a, b=inst_b,
                     theta=inst_theta, verts=inst_verts, image=gt_image, ann_id=gt_ann_id, ann_order=ann_order,
                     n_images=n_images)

    # predictions -> instances of their class (each predicted instance at least once)
    gt_start = np.concatenate([[0], np.cumsum(n_gt_class)[:-1]])
    first = np.concatenate([[0], np.cumsum(n_class)[:-1]])
    within = np.arange(N) - first[cls]
    pick = np.where(within < n_gt_class[cls], within, np.floor(rng.random(N) * n_gt_class[cls]).astype(np.int64))
    p_gt = gt_start[cls] + pick
    direction = group_profile[group] + 0.7 * rng.standard_normal((N, 4))
    direction[:, 0] = np.abs(direction[:, 0])
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    direction *= STEP_SCALE
    p_phi = rng.uniform(0.0, 2 * np.pi, N)
    score_noise = SCORE_NOISE * rng.standard_t(TAIL_DF, N)
    piou_noise = PRED_IOU_NOISE * rng.standard_t(TAIL_DF, N)
    piou_outlier = rng.random(N) < PRED_IOU_OUTLIERS
    piou_outlier_value = rng.uniform(0.85, 1.0, N)
    feat_noise = rng.standard_normal((N, D), dtype=np.float32)

    gt_rle, gt_area, gt_box, p_rle, true_iou = render_masks(inst, p_gt, direction, p_phi, target, S,
                                                            progress=progress)
    score = np.round(_sigmoid(score_bias[cls] + score_slope[cls] * (true_iou - 0.6) + SCORE_FIELD * f_score
                              + score_noise), 5)
    pred_iou = np.clip(piou_slope[cls] * true_iou + (1 - piou_slope[cls]) * 0.8 + piou_bias[cls] + piou_noise, 0, 1)
    pred_iou = np.round(np.where(piou_outlier, piou_outlier_value, pred_iou), 5)
    gt, preds, out = coco_records(description(params), params, inst, gt_rle, gt_area, gt_box, p_gt, p_rle, score,
                                  pred_iou if with_pred_iou else None, C)

    # features in file order, one class block at a time (no (N, L, D) temporaries)
    features = np.empty((N, D), dtype=np.float32)
    cls_out = cls[out]
    for c in range(C):
        rows = np.flatnonzero(cls_out == c)
        if len(rows) == 0:
            continue
        src = out[rows]
        features[rows] = (class_center[c] + z[src].astype(np.float32) @ latent_map[c]
                          + u[src].astype(np.float32) @ nuisance_map[c])
    features += np.float32(FEATURE_NOISE) * feat_noise
    log.info("made %d synthetic predictions (mixed), %d instances, %d images, %d classes, %d groups",
             N, G, n_images, C, K)
    return MixedSet(
        gt=gt, predictions=preds, features=features, true_iou=true_iou[out], target_iou=target[out],
        source_ann_id=gt_ann_id[p_gt][out], p_correct=p_correct[out], correct_drawn=correct[out],
        group=group[out], latent=z[out].astype(np.float32), group_category=group_category, class_rate=class_rate,
        class_amplitude=amplitude, class_score_bias=score_bias, class_score_slope=score_slope,
        class_piou_slope=piou_slope, params=params,
    )


def class_correct_share(synth: MixedSet, correct_iou: float = CORRECT_IOU) -> np.ndarray:
    """Measured share of masks with true IoU above ``correct_iou``, per class (index k: category k + 1)."""
    cat = np.array([r["category_id"] for r in synth.predictions])
    C = synth.params["classes"]
    n = np.bincount(cat - 1, minlength=C)
    return np.bincount(cat - 1, weights=synth.true_iou > correct_iou, minlength=C) / np.maximum(n, 1)


def readme_text(synth: MixedSet) -> str:
    rate = class_correct_share(synth)
    iou = synth.true_iou
    lines = readme_head(synth, [
        "  latent.npz        per prediction (same order): id, true_iou (exact IoU with the best same-class",
        "                    instance), target_iou, p_correct (share of correct masks around it), correct_drawn,",
        "                    group, latent (position z), source_ann_id; per group: group_category; per class:",
        "                    class_rate, class_amplitude, class_score_bias, class_score_slope, class_piou_slope.",
    ]) + [
        "How they were made (crowdprop.replay.synth_mixed, generator 'mixed')",
        "  Each class has a target share of correct masks between 0.40 and 0.95. Masks sit in overlapping",
        "  latent groups; the chance that a mask is correct is a smooth random function of its position,",
        "  so every cluster of nearby masks mixes correct and wrong ones. Many masks aim just above or just",
        "  below IoU 0.75. score and pred_iou are heavy-tailed, class-biased (some classes over-confident)",
        "  signals of the true IoU. features = class centre + linear maps of the position and of a nuisance",
        "  'viewpoint' + Gaussian noise.",
        readme_correlations(synth),
        f"  Share of masks with true IoU > 0.75: {np.mean(iou > CORRECT_IOU):.3f}; per class "
        f"{rate.min():.3f} to {rate.max():.3f}; within 0.05 of 0.75: {np.mean(np.abs(iou - CORRECT_IOU) < 0.05):.3f}.",
        "",
    ]
    return "\n".join(lines)


def write_mixed(synth: MixedSet, out_dir: str | os.PathLike) -> Path:
    """Write ``synth`` into ``out_dir`` (new or empty), whole or not at all; the files of
    :func:`crowdprop.replay.synth.write_synthetic` with this generator's latent.npz and README.txt."""
    latent = dict(
        id=np.arange(1, len(synth.predictions) + 1), true_iou=synth.true_iou, target_iou=synth.target_iou,
        p_correct=synth.p_correct, correct_drawn=synth.correct_drawn, group=synth.group, latent=synth.latent,
        source_ann_id=synth.source_ann_id, group_category=synth.group_category, class_rate=synth.class_rate,
        class_amplitude=synth.class_amplitude, class_score_bias=synth.class_score_bias,
        class_score_slope=synth.class_score_slope, class_piou_slope=synth.class_piou_slope)
    return write_set_files(out_dir, synth.gt, synth.predictions, synth.features, readme_text(synth), latent)
