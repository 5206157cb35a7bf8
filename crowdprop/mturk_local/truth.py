"""Ground truth for simulated workers: ``mask_id`` -> is the mask correct.

A mask is correct when its IoU with the best same-class ground-truth instance
(``gt_iou``) is above ``campaign.correct_iou`` (default 0.75); a mask with no
ground truth (``gt_iou`` NaN) is not correct.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError


def truth_from_masks(masks: pd.DataFrame, *, correct_iou: float = 0.75, source: str = "masks") -> dict[int, bool]:
    """``{mask_id: gt_iou > correct_iou}`` from a masks table (columns ``mask_id``, ``gt_iou``)."""
    for col in ("mask_id", "gt_iou"):
        if col not in masks.columns:
            raise InputError(source, None, col, "column missing (the simulated workers need ground truth)")
    ids = masks["mask_id"].to_numpy()
    iou = masks["gt_iou"].to_numpy(dtype=np.float64)
    correct = np.nan_to_num(iou, nan=-1.0) > correct_iou
    return {int(i): bool(c) for i, c in zip(ids, correct)}


def truth_from_run_dir(run_dir: str | os.PathLike, *, correct_iou: float | None = None) -> dict[int, bool]:
    """Truth from ``RUN_DIR/masks.parquet``; the threshold from ``RUN_DIR/config.json`` when present."""
    from .. import config as cfg
    from ..io import read_parquet

    run_dir = Path(run_dir)
    path = run_dir / "masks.parquet"
    if not path.is_file():
        raise InputError(path, None, None, "file not found (is this a run directory?)")
    if correct_iou is None:
        conf = run_dir / "config.json"
        correct_iou = cfg.load_json(conf).campaign.correct_iou if conf.is_file() else cfg.CampaignSection().correct_iou
    masks = read_parquet(path, columns=None)
    return truth_from_masks(masks, correct_iou=correct_iou, source=str(path))


def truth_from_coco(gt_json: str | os.PathLike, predictions_json: str | os.PathLike, *,
                    correct_iou: float = 0.75) -> dict[int, bool]:
    """Truth from COCO ground truth and predictions (IoU computed by :mod:`crowdprop.masks`)."""
    from ..masks import load_ground_truth, load_predictions

    gt = load_ground_truth(gt_json)
    masks = load_predictions(predictions_json, gt)
    return truth_from_masks(masks, correct_iou=correct_iou, source=str(predictions_json))
