"""Accepted masks out, as COCO instances."""
from __future__ import annotations

import numpy as np

from ..masks import write_instances
from ..policy.controller import mask_status
from .loop import load_state
from .store import RunDir


def final_status(run: RunDir) -> np.ndarray:
    """(n,) int8: 1 accepted, 0 rejected, -1 open, per mask row."""
    state = load_state(run)
    return mask_status(run.forest, state.status, state.label_p)


def export_accepted(run: RunDir, path) -> int:
    status = final_status(run)
    masks = run.masks[status == 1]
    images = run.table("images")
    cats = run.table("categories")
    used = set(masks["image_id"].tolist())
    images = images[images["id"].isin(used)]
    info = {"description": f"crowdprop export of campaign {run.campaign.get('campaign_id')}: "
                           f"masks accepted by crowd verification and label propagation"}
    return write_instances(path, masks, images, cats, info=info)
