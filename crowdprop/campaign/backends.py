"""Build the crowd backend a run directory asks for (``campaign.json["crowd"]``)."""
from __future__ import annotations

import numpy as np

from ..crowd.simulated import SimulatedCrowd
from ..errors import StateError
from ..replay.workers import WorkerPool
from .store import RunDir


def truth_of(run: RunDir) -> np.ndarray:
    """Replay truth per mask row: IoU with the best same-class ground truth above ``correct_iou``."""
    iou = run.masks["gt_iou"].to_numpy(np.float64)
    if not np.isfinite(iou).any():
        raise StateError(f"{run.path}: a simulated crowd needs ground truth, and this run has none")
    return iou > run.config.campaign.correct_iou


def simulated_backend(run: RunDir) -> SimulatedCrowd:
    cfg = run.config
    return SimulatedCrowd(truth_of(run), WorkerPool.build(cfg.simulation, cfg.campaign.seed))


def make_backend(run: RunDir, **options):
    kind = run.campaign.get("crowd", {}).get("kind", "simulated")
    if kind == "simulated":
        return simulated_backend(run)
    raise StateError(f"{run.path}: crowd kind '{kind}' is not available in this version")
