"""The fixed Gaussian random projection from ROI features to clustering features.

A mask's clustering feature is its masked ROI feature map (``256 x 7 x 7`` =
12544 values, see :mod:`crowdprop.detect.model`) times a ``(12544, 512)`` matrix
``R`` with independent ``N(0, 1/512)`` entries (Johnson-Lindenstrauss: squared
distances are kept in expectation). ``R`` is drawn once from a seeded
:class:`numpy.random.Generator` and stored as ``RUN_DIR/projection.npy``; later
runs in the same run directory load it, so features of different runs (and of a
resumed run) live in the same space. Copy the file to another run directory to
make its features comparable too.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import StateError
from ..io import atomic_write_bytes

__all__ = ["ROI_CHANNELS", "ROI_SIZE", "ROI_DIM", "FEATURE_DIM", "PROJECTION_SEED", "PROJECTION_FILE",
           "make_projection", "load_or_create_projection"]

ROI_CHANNELS = 256
"""Channels of the FPN features pooled by the ROI heads."""
ROI_SIZE = 7
"""Side of the pooled ROI feature map."""
ROI_DIM = ROI_CHANNELS * ROI_SIZE * ROI_SIZE
"""Length of a flattened masked ROI feature map (12544)."""
FEATURE_DIM = 512
"""Length of a clustering feature."""
PROJECTION_SEED = 2021
"""Seed of the projection matrix when a run directory has none yet."""
PROJECTION_FILE = "projection.npy"


def make_projection(rng: np.random.Generator, *, in_dim: int = ROI_DIM, out_dim: int = FEATURE_DIM) -> np.ndarray:
    """Draw a Gaussian random projection matrix.

    Parameters
    ----------
    rng : numpy.random.Generator
    in_dim, out_dim : int

    Returns
    -------
    numpy.ndarray, shape (in_dim, out_dim), float32
        Entries ``N(0, 1 / out_dim)``; ``x @ R`` maps ``(n, in_dim)`` to ``(n, out_dim)``.
    """
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def load_or_create_projection(run_dir: str | Path, *, seed: int = PROJECTION_SEED) -> np.ndarray:
    """Load ``RUN_DIR/projection.npy``, or draw it from ``seed`` and store it there.

    Returns
    -------
    numpy.ndarray, shape (12544, 512), float32

    Raises
    ------
    crowdprop.errors.StateError
        The stored file is unreadable or has another shape or dtype.
    """
    path = Path(run_dir) / PROJECTION_FILE
    if path.exists():
        try:
            r = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise StateError(f"{path}: not a readable .npy file ({e})") from None
        if r.shape != (ROI_DIM, FEATURE_DIM) or r.dtype != np.float32:
            raise StateError(f"{path}: projection must be float32 of shape {(ROI_DIM, FEATURE_DIM)}, "
                             f"found {r.dtype} {r.shape}")
        return r
    r = make_projection(np.random.default_rng(seed))
    buf = io.BytesIO()
    np.save(buf, r, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return r
