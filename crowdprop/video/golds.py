"""The gold pool of a video campaign without ground truth: regions whose answer is known.

A video run directory made with ``--gt`` draws its gold pool from the ground truth at ``init``;
a real campaign (``--crowd mturk`` without ``--gt``) starts with none. Golds come then from

* a file (:func:`read_gold_file`, ``crowdprop video gold import RUN_DIR FILE``): CSV with a header
  or JSON (a list of objects), one record per gold: ``frame`` (its number, 0 .., or its file name
  as ``crowdprop video init`` recorded it), the region as ``region`` (its id in the run directory,
  as ``answers.parquet`` and ``hits.parquet`` name it; for ``patch`` and ``superpixel`` units
  ``unit`` is the same id) or as a pixel ``x``, ``y`` of the frame (the region under it), and
  ``class`` (a class id or name of labels.json, or ``mixed``: no class covers about four fifths
  of the region);
* the label answers of a trusted person (:func:`trusted_golds`, ``--worker ID``): who did HITs of
  the campaign under a worker id whose answers are taken as known.

A bad record is one line naming the file, the record and the field (exit code 2), and nothing
is imported. The file reader is the image workflow's (:func:`crowdprop.campaign.golds.read_records`).
Imported golds join the pool (an imported region replaces the pool's answer for it) under the run
directory's lock (refused in one line while a run holds it) and are used from the next round on,
in HITs and in the qualification test, as ground-truth golds are.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import read_parquet, write_parquet
from .crowd import MIXED

if TYPE_CHECKING:
    from .rundir import VideoRun

GOLDS = "golds.parquet"
COLUMNS = ["region", "frame", "truth", "used"]


def pool(vr: VideoRun) -> pd.DataFrame:
    """The run's gold pool (``region, frame, truth, used``; empty without golds)."""
    p = vr.path / GOLDS
    if p.exists():
        return read_parquet(p)
    return pd.DataFrame({c: pd.Series(dtype="int64") for c in COLUMNS})


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _int(path, where: str, kind: str, r: dict, key: str) -> int:
    v = r.get(key)
    if kind == "csv" and isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise InputError(path, where, key, f"not an integer: {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(path, where, key, f"not an integer: {v!r}")
    return int(v)


class _Frames:
    """What a record may name: frames by number or name, their regions, the classes."""

    def __init__(self, vr: VideoRun):
        self.vr = vr
        self.names = {str(n): i for i, n in enumerate(vr.campaign.get("frame_names") or [])}
        self.n_frames = int(vr.campaign["frames"])
        self.height, self.width = int(vr.campaign["height"]), int(vr.campaign["width"])
        self.classes = list(vr.classes)
        self.regions = vr.unit_store()["regions"]  # read a chunk at a time
        self.frame_units = vr.config.video.granularity == "frame" or vr.config.video.method == "keyframe"
        self._ids: dict[int, np.ndarray] = {}

    def region_ids(self, t: int) -> np.ndarray:
        if t not in self._ids:
            self._ids[t] = np.unique(np.asarray(self.regions[t]))
        return self._ids[t]

    def frame(self, path, where: str, kind: str, r: dict) -> int:
        v = r.get("frame")
        if _blank(v):
            raise InputError(path, where, "frame", "missing")
        if isinstance(v, str):
            text = v.strip()
            if text in self.names:
                return self.names[text]
            if not text.lstrip("-").isdigit():
                raise InputError(path, where, "frame", f"{v!r} is neither a frame number nor a frame's file name")
            t = int(text)
        elif isinstance(v, int) and not isinstance(v, bool):
            t = int(v)
        else:
            raise InputError(path, where, "frame", f"not a frame number: {v!r}")
        if not 0 <= t < self.n_frames:
            raise InputError(path, where, "frame", f"no frame {t}: the video has frames 0 to {self.n_frames - 1}")
        return t

    def region(self, path, where: str, kind: str, r: dict, t: int) -> int:
        key = "region" if not _blank(r.get("region")) else "unit" if not _blank(r.get("unit")) else None
        if key == "unit" and self.frame_units:
            raise InputError(path, where, "unit", "this run's units are whole frames, asked region by region: "
                                                  "give region, or x and y")
        if key is not None:
            reg = _int(path, where, kind, r, key)
            if reg not in set(self.region_ids(t).tolist()):
                raise InputError(path, where, key, f"{reg} is not a region of frame {t}")
            return reg
        if _blank(r.get("x")) or _blank(r.get("y")):
            raise InputError(path, where, "region", "missing: give region (or unit), or the pixel x and y")
        x, y = _int(path, where, kind, r, "x"), _int(path, where, kind, r, "y")
        if not 0 <= x < self.width:
            raise InputError(path, where, "x", f"{x} is outside the frame (width {self.width})")
        if not 0 <= y < self.height:
            raise InputError(path, where, "y", f"{y} is outside the frame (height {self.height})")
        return int(np.asarray(self.regions[t])[y, x])

    def truth(self, path, where: str, r: dict) -> int:
        v = r.get("class")
        if _blank(v):
            raise InputError(path, where, "class", "missing")
        text = str(v).strip()
        if isinstance(v, bool):
            raise InputError(path, where, "class", f"not a class: {v!r}")
        if text.lower() == "mixed":
            return MIXED
        if text in self.classes:
            return self.classes.index(text)
        if text.lstrip("-").isdigit():
            k = int(text)
            if 0 <= k < len(self.classes):
                return k
        raise InputError(path, where, "class", f"{v!r} is no class of labels.json (ids 0 to "
                                               f"{len(self.classes) - 1}, their names, or mixed)")


def read_gold_file(vr: VideoRun, path: str | os.PathLike) -> pd.DataFrame:
    """The golds of a file (module docstring) as ``region, frame, truth``; every record checked."""
    from ..campaign.golds import read_records

    p, kind, records = read_records(path, ("frame", "class"))
    f = _Frames(vr)
    rows = []
    for where, r in records:
        t = f.frame(p, where, kind, r)
        rows.append((f.region(p, where, kind, r, t), t, f.truth(p, where, r), where))
    if not rows:
        raise InputError(p, None, None, "no golds in the file")
    df = pd.DataFrame(rows, columns=["region", "frame", "truth", "where"])
    clash = df.groupby("region")["truth"].transform("nunique") > 1
    if clash.any():
        first = df.loc[clash].iloc[0]
        other = df.loc[clash & (df["region"] == first["region"])].iloc[1]
        raise InputError(p, other["where"], "class", f"region {int(first['region'])} was given another class "
                                                     f"in {first['where']}")
    return df.drop_duplicates("region")[["region", "frame", "truth"]].astype("int64").reset_index(drop=True)


def trusted_golds(vr: VideoRun, worker: str) -> pd.DataFrame:
    """``region, frame, truth`` of every label question ``worker`` answered in the committed rounds
    (their latest answer to a region), approved or not: a trusted person's answers are known."""
    ans = vr.table("answers")
    if len(ans):
        ans = ans.loc[(ans["worker"].astype(str) == worker) & (ans["kind"] == "label")]
    if not len(ans):
        raise InputError("command line", None, "--worker", f"{worker!r} answered no label question in "
                                                           f"{vr.path}")
    last = ans.sort_values("round", kind="stable").drop_duplicates("region", keep="last")
    return pd.DataFrame({"region": last["region"].to_numpy(np.int64), "frame": last["frame"].to_numpy(np.int64),
                         "truth": last["answer"].to_numpy(np.int64)}).sort_values("region").reset_index(drop=True)


def add_golds(vr: VideoRun, new: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """Merge ``new`` (``region, frame, truth``) into the pool (a region in both takes the new answer);
    returns (golds added, the pool). Call under the run's lock."""
    old = pool(vr)
    merged = pd.concat([old.loc[~old["region"].isin(new["region"]), COLUMNS], new.assign(used=0)[COLUMNS]],
                       ignore_index=True)
    merged = merged.astype("int64").sort_values("region").reset_index(drop=True)
    write_parquet(vr.path / GOLDS, merged)
    return len(new), merged


def import_golds(vr: VideoRun, path: str | os.PathLike | None = None, *, worker: str | None = None
                 ) -> tuple[int, pd.DataFrame]:
    """``crowdprop video gold import``: golds from a file or a trusted worker's answers into the pool,
    under the run's lock."""
    with vr.lock():
        new = read_gold_file(vr, path) if path is not None else trusted_golds(vr, str(worker))
        return add_golds(vr, new)
