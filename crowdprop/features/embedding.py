"""The clustering distance: features plus predicted quality, as a Euclidean embedding."""
from __future__ import annotations

import logging

import numpy as np
from sklearn.utils.extmath import randomized_svd

log = logging.getLogger(__name__)

PCA_FIT_ROWS = 20_000
"""PCA is fitted on at most this many rows (a seeded sample), then applied to all."""
_CHUNK = 16_384


def _mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) variance in float64, two passes over row chunks."""
    n, d = x.shape
    if n == 0:
        return np.zeros(d), np.zeros(d)
    total = np.zeros(d)
    for a in range(0, n, _CHUNK):
        total += x[a:a + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    ss = np.zeros(d)
    for a in range(0, n, _CHUNK):
        ss += np.square(x[a:a + _CHUNK] - mean).sum(axis=0)
    return mean, ss / n


def clustering_embedding(
    features: np.ndarray,
    quality: np.ndarray,
    *,
    quality_weight: float,
    pca_dims: int,
    rng: np.random.Generator,
) -> np.ndarray:
    r"""Embed masks so that Euclidean distance is the clustering distance.

    The paper's best clustering setting ("attention + quality score") measures the
    distance between two masks as their normalized feature distance combined with
    their normalized predicted-quality distance. We realize it as

    .. math::

        D(i, j)^2 = \frac{\lVert z_i - z_j \rVert^2}{s_z^2}
                    + w^2 \frac{(q_i - q_j)^2}{s_q^2}

    where

    * :math:`z_i` is feature row :math:`i` standardized per dimension (zero mean,
      unit variance; constant dimensions become 0), then projected on its first
      ``pca_dims`` principal components when ``0 < pca_dims < d`` (randomized SVD,
      seeded from ``rng``, fitted on at most :data:`PCA_FIT_ROWS` sampled rows);
    * :math:`s_z^2 = \mathrm{E}\lVert z_i - z_j\rVert^2 = 2 \sum_k \mathrm{Var}(z_{\cdot k})`
      over independent random pairs, so the feature term averages 1 (``s_z`` is
      the root-mean-square pairwise distance; exact, no pair sampling);
    * :math:`s_q^2 = 2\,\mathrm{Var}(q)`, likewise for the quality term;
    * :math:`w` = ``quality_weight``: at 1 both terms weigh the same on average,
      at 0 quality is ignored.

    A zero scale (all rows equal) is replaced by 1. The embedding is
    ``[z / s_z, w * q / s_q]``, one column more than ``z``.

    Parameters
    ----------
    features : (n, d) array
        Finite feature vectors (:func:`~crowdprop.features.shape_features`,
        :func:`~crowdprop.features.load_features`).
    quality : (n,) array
        Predicted mask quality in [0, 1] (e.g. ``pred_iou`` or ``score``); finite.
    quality_weight : float
        :math:`w \ge 0`.
    pca_dims : int
        Reduce the features to this many dimensions; 0 keeps all.
    rng : numpy.random.Generator
        Source of the PCA sample and the randomized SVD seed.

    Returns
    -------
    embedding : (n, d' + 1) float32
        ``d' = min(d, pca_dims)`` when ``pca_dims > 0``, else ``d``.
    """
    x = np.asarray(features)
    q = np.asarray(quality, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
    n, d = x.shape
    if q.shape != (n,):
        raise ValueError(f"quality must have shape ({n},), got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"quality has {int((~np.isfinite(q)).sum())} non-finite values")
    if quality_weight < 0:
        raise ValueError("quality_weight must be >= 0")
    if pca_dims < 0:
        raise ValueError("pca_dims must be >= 0")
    if not np.all(np.isfinite(x)):
        raise ValueError("features have non-finite values")

    mean, var = _mean_var(x)
    std = np.sqrt(var)
    inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)

    reduce = 0 < pca_dims < d and n > 1
    k = min(pca_dims, d) if reduce else d
    if reduce:
        fit_rows = np.sort(rng.choice(n, PCA_FIT_ROWS, replace=False)) if n > PCA_FIT_ROWS else np.arange(n)
        sample = (x[fit_rows].astype(np.float64) - mean) * inv
        sample -= sample.mean(axis=0)
        k = min(k, sample.shape[0])
        _, _, vt = randomized_svd(sample, n_components=k, n_iter=5,
                                  random_state=int(rng.integers(2**31 - 1)))
        proj = (vt.T * inv[:, None]).astype(np.float32)  # (d, k): standardize and project
        shift = (mean @ proj.astype(np.float64)).astype(np.float32)
    z = np.empty((n, k + 1), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        blk = x[a:a + _CHUNK]
        if reduce:
            z[a:a + _CHUNK, :k] = blk.astype(np.float32) @ proj - shift
        else:
            z[a:a + _CHUNK, :k] = ((blk - mean) * inv).astype(np.float32)

    feat = z[:, :k]
    s_z = float(np.sqrt(2.0 * _mean_var(feat)[1].sum()))
    if s_z > 0:
        feat *= np.float32(1.0 / s_z)
    s_q = float(np.sqrt(2.0 * q.var())) if n else 0.0
    z[:, k] = (quality_weight * q / (s_q if s_q > 0 else 1.0)).astype(np.float32)
    log.debug("clustering embedding: n=%d d=%d -> %d (+quality), s_z=%.4g s_q=%.4g", n, d, k, s_z, s_q)
    return z
