"""Tables and enums shared by every stage.

All tables are pandas DataFrames on the way in and Parquet on disk. Enum-valued
columns are stored as their ``.value`` strings and checked when read back
(:func:`check_enum_column`), so a hand-edited or foreign Parquet file with an
unknown state is refused instead of silently misread.

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
from typing import Iterable, Type

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
    """Sequential policy only: the interval has not cleared a bar yet and more
    answers were asked for; the node stays a candidate."""


class NodeStatus(str, enum.Enum):
    """State of a tree node between rounds."""

    INACTIVE = "inactive"
    """An ancestor has not been split yet; the node is not a candidate."""
    OPEN = "open"
    """A candidate: on the frontier, not decided."""
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SPLIT = "split"
    VERIFIED = "verified"
    """Decided member by member (leaf or small cluster)."""


NODE_CODES: dict[NodeStatus, int] = {
    NodeStatus.INACTIVE: 0, NodeStatus.OPEN: 1, NodeStatus.SPLIT: 2,
    NodeStatus.ACCEPTED: 3, NodeStatus.REJECTED: 4, NodeStatus.VERIFIED: 5,
}
"""Node status as int8 codes in the controller's arrays (one byte per node)."""
INACTIVE, OPEN, SPLIT, ACCEPTED, REJECTED, VERIFIED = range(6)


class MaskStatus(str, enum.Enum):
    """Final label of a mask."""

    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class AssignmentStatus(str, enum.Enum):
    """MTurk assignment states (the ones crowdprop sees)."""

    SUBMITTED = "Submitted"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class HitStatus(str, enum.Enum):
    """MTurk HIT states."""

    ASSIGNABLE = "Assignable"
    UNASSIGNABLE = "Unassignable"
    REVIEWABLE = "Reviewable"
    REVIEWING = "Reviewing"
    DISPOSED = "Disposed"


def check_enum_column(df: pd.DataFrame, column: str, enum_type: Type[enum.Enum], source: str) -> None:
    """Raise :class:`crowdprop.errors.StateError` if ``df[column]`` holds an unknown value."""
    from .errors import StateError

    allowed = {m.value for m in enum_type}
    values = set(pd.unique(df[column].astype(str))) if len(df) else set()
    bad = values - allowed
    if bad:
        raise StateError(
            f"{source}: field '{column}': unknown {enum_type.__name__} value(s) {sorted(bad)[:3]}"
        )


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


def values(members: Iterable[enum.Enum]) -> list[str]:
    return [m.value for m in members]
