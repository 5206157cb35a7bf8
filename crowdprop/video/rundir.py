"""A video run directory on disk (the layout is :mod:`crowdprop.video.run`'s): reading its inputs,
rounds and tables, committing a round atomically, the run's crowd and campaign id, its lock."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StateError
from ..io import atomic_path, atomic_write_text, read_parquet, write_parquet
from . import config as vconfig

KIND = "video"
CROWDS = ("simulated", "mturk-local", "mturk")
"""Crowd kinds of a video run: in-process simulated workers; simulated workers behind a local
MTurk-compatible endpoint this process starts (boto3 all the way); MTurk (or an endpoint by URL)."""
_ROUND = re.compile(r"round-(\d{5})$")


def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_npz(path: Path) -> dict:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise StateError(f"{path}: missing; not a complete video run directory") from None
    except (ValueError, OSError, EOFError) as e:
        raise StateError(f"{path}: damaged ({type(e).__name__})") from None


class VideoRun:
    """A video run directory (its layout: :mod:`crowdprop.video.run`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- reading ---------------------------------------------------------------------------------
    def require(self) -> "VideoRun":
        c = self.path / "campaign.json"
        try:
            data = json.loads(c.read_text())
        except FileNotFoundError:
            raise StateError(f"{self.path}: not a video run directory (no campaign.json); "
                             "make one with crowdprop video init") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StateError(f"{c}: damaged (not JSON)") from None
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise StateError(f"{c}: not a video run directory (kind is not 'video')")
        self.campaign = data
        self.config = vconfig.load_json(self.path / "config.json")
        return self

    @property
    def classes(self) -> list[str]:
        return list(self.campaign["classes"])

    @property
    def crowd(self) -> dict:
        """``campaign.json`` crowd: ``{"kind": "simulated" | "mturk-local" | "mturk", "target": ...}``
        (a run directory of the first version says ``"simulated"``)."""
        c = self.campaign.get("crowd") or "simulated"
        return {"kind": c} if isinstance(c, str) else dict(c)

    def crowd_kind(self) -> str:
        kind = str(self.crowd.get("kind", "simulated"))
        if kind not in CROWDS:
            raise StateError(f"{self.path / 'campaign.json'}: field 'crowd': kind '{kind}' must be one of "
                             f"{', '.join(CROWDS)}")
        return kind

    def write_campaign(self, data: dict) -> None:
        atomic_write_text(self.path / "campaign.json", json.dumps(data, indent=1) + "\n")
        self.campaign = data

    def campaign_id(self) -> str:
        """The prefix of the campaign's HIT tokens (made and recorded on first use by a run directory
        of the first version; call holding the lock)."""
        if not self.campaign.get("campaign_id"):
            from ..campaign.init import campaign_id

            self.write_campaign(dict(self.campaign, campaign_id=campaign_id(self.crowd, int(self.campaign["seed"]))))
        return str(self.campaign["campaign_id"])

    def frames(self) -> np.ndarray:
        return load_npz(self.path / "frames.npz")["frames"]

    def gt(self) -> np.ndarray | None:
        p = self.path / "gt.npz"
        return load_npz(p)["gt"] if p.exists() else None

    def units(self) -> dict:
        return load_npz(self.path / "units.npz")

    def flows(self) -> dict:
        z = load_npz(self.path / "flows.npz")
        z["fwd"], z["bwd"] = z["fwd"].astype(np.float32), z["bwd"].astype(np.float32)
        return z

    def rounds(self) -> list[int]:
        d = self.path / "state"
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir()
                      if (m := _ROUND.match(p.name)) and (p / "_COMPLETE").exists())

    def round_dir(self, r: int) -> Path:
        return self.path / "state" / f"round-{r:05d}"

    def journal_dir(self, r: int) -> Path:
        return self.path / "journal" / f"round-{r:05d}"

    def metrics(self) -> list[dict]:
        out = []
        for r in self.rounds():
            out.append(json.loads((self.round_dir(r) / "metrics.json").read_text()))
        return out

    def table(self, name: str) -> pd.DataFrame:
        parts = [read_parquet(self.round_dir(r) / f"{name}.parquet") for r in self.rounds()
                 if (self.round_dir(r) / f"{name}.parquet").exists()]
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def pred(self, r: int | None = None) -> np.ndarray:
        r = self.rounds()[-1] if r is None else r
        return load_npz(self.round_dir(r) / "pred.npz")["labels"]

    def model_path(self, r: int) -> Path:
        p = self.round_dir(r) / "model.pt"
        return p if r > 0 and p.exists() else self.path / "model" / "base.pt"

    # -- writing ---------------------------------------------------------------------------------
    def commit_round(self, r: int, files: dict[str, object]) -> None:
        """Write a round's files into ``state/.round-r.tmp`` and rename it ``state/round-r``."""
        state = self.path / "state"
        state.mkdir(parents=True, exist_ok=True)
        tmp = state / f".round-{r:05d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, value in files.items():
            p = tmp / name
            if isinstance(value, pd.DataFrame):
                write_parquet(p, value)
            elif isinstance(value, dict) and name.endswith(".json"):
                atomic_write_text(p, json.dumps(value, indent=1, sort_keys=True) + "\n")
            elif isinstance(value, dict) and name.endswith(".npz"):
                save_npz(p, **value)
            elif isinstance(value, Path):
                shutil.copyfile(value, p)
            else:
                raise TypeError(f"cannot write {name}")
        (tmp / "_COMPLETE").write_bytes(b"")
        final = self.round_dir(r)
        if final.exists():  # a leftover without _COMPLETE
            shutil.rmtree(final)
        os.replace(tmp, final)
        with contextlib.suppress(OSError):
            fd = os.open(state, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    @contextlib.contextmanager
    def lock(self):
        from ..campaign.store import RunDir

        with RunDir(self.path).lock():
            yield
