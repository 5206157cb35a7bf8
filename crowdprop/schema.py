"""Tables and enums shared by every stage.

All tables are pandas DataFrames on the way in and Parquet on disk. Enum-valued
columns are stored as their ``.value`` strings.

masks.parquet (one row per predicted mask; row position = internal index)
    mask_id      int64    user-facing id: the result's ``id`` or its index in the file
    image_id     int64
    category_id  int64
    score        float64  detector confidence in [0, 1]
    pred_iou     float64  predicted mask quality in [0, 1]; NaN when the detector gave none
    height,width int32    image size in pixels (RLE ``size``)
    rle          string   compressed COCO RLE counts (see crowdprop.masks.rle)
    area         float64  pixels
    bbox_x, bbox_y, bbox_w, bbox_h  float64  COCO box of the mask
    gt_iou       float64  IoU with the best same-class ground-truth instance (NaN: no GT)
    gt_ann_id    int64    id of that instance (-1: none)
"""
from __future__ import annotations

import enum

import numpy as np
import pandas as pd

MASK_COLUMNS: dict[str, str] = {
    "mask_id": "int64",
    "image_id": "int64",
    "category_id": "int64",
    "score": "float64",
    "pred_iou": "float64",
    "height": "int32",
    "width": "int32",
    "rle": "object",
    "area": "float64",
    "bbox_x": "float64",
    "bbox_y": "float64",
    "bbox_w": "float64",
    "bbox_h": "float64",
    "gt_iou": "float64",
    "gt_ann_id": "int64",
}


class Decision(str, enum.Enum):
    """What the controller did with a cluster (tree node) in a round."""

    ACCEPT = "accept"
    """Estimated precision cleared the accept bar: every member becomes correct
    (members answered 'no' directly stay rejected)."""
    REJECT = "reject"
    """Estimated precision fell under the reject bar: every member becomes wrong
    (members answered 'yes' directly stay accepted)."""
    SPLIT = "split"
    """Neither bar was cleared (or predicted quality was below K_pa): the node's
    children become candidates."""
    VERIFY = "verify"
    """The node is small or a leaf: each member is labeled by its own answers."""
    WAIT = "wait"
    """Sequential and target policies: the evidence does not settle the cluster yet and
    more answers were asked for; the node stays a candidate."""
    REOPEN = "reopen"
    """Target policy: audits showed the accepted clusters of a class falling short of the
    target and this accepted cluster no longer passes with its audit answers counted;
    it becomes a candidate again."""


class QuestionKind(str, enum.Enum):
    """Why a mask was asked about (``kind`` in questions and answers tables)."""

    CLUSTER = "cluster"
    """Sampled from a candidate cluster for its verdict (or a small cluster's member)."""
    GOLD = "gold"
    """A gold question: known answer, scores the worker."""
    AUDIT = "audit"
    """A uniform sample of masks decided without a direct answer; measures the precision
    of each decision source and is never used to label the mask itself."""
    ACTIVE = "active"
    """Chosen by the verifier: uncertain and diverse (labels the mask)."""
    RANDOM = "random"
    """Uniform over open masks: checks the verifier's calibration (labels the mask)."""


KIND_NODE = {QuestionKind.GOLD: -1, QuestionKind.AUDIT: -2, QuestionKind.ACTIVE: -3, QuestionKind.RANDOM: -4}
"""``node_id`` of questions that do not belong to a cluster, by kind."""
NODE_KIND = {v: k.value for k, v in KIND_NODE.items()}


NODE_INACTIVE, NODE_OPEN, NODE_SPLIT, NODE_ACCEPTED, NODE_REJECTED, NODE_VERIFIED = range(6)
"""Status of a tree node between rounds: int8 codes in the controller's status array
(one byte per node). NODE_INACTIVE: an ancestor has not been split yet, the node is not
a candidate; NODE_OPEN: a candidate on the frontier; NODE_SPLIT: its children took its
place; NODE_ACCEPTED / NODE_REJECTED: decided as a whole; NODE_VERIFIED: decided member
by member (leaf or small cluster).

A status is not a :class:`Decision` (the string a round's decisions table records for a
node): ``accept``, ``reject`` and ``verify`` move a node to NODE_ACCEPTED, NODE_REJECTED and
NODE_VERIFIED, ``split`` to NODE_SPLIT (and its children to NODE_OPEN), ``reopen`` back to
NODE_OPEN; ``wait`` leaves it NODE_OPEN."""


def empty_masks() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MASK_COLUMNS.items()})


def coerce_masks(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly :data:`MASK_COLUMNS`, in order and with their dtypes."""
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for c, t in MASK_COLUMNS.items():
        if c in df:
            out[c] = df[c].to_numpy().astype(t) if t != "object" else df[c].astype(str).to_numpy()
        elif c == "gt_ann_id":
            out[c] = np.full(len(df), -1, dtype=np.int64)
        elif t == "float64":
            out[c] = np.full(len(df), np.nan)
        else:
            raise KeyError(c)
    return out
