"""The run directory: every fact of a campaign, in Parquet, written atomically.

Layout::

    RUN_DIR/
      config.json            resolved configuration (crowdprop.config)
      campaign.json          campaign id, crowd kind, sources, version
      masks.parquet          one row per predicted mask (crowdprop.schema)
      images.parquet         id, file_name, height, width, coco_url
      categories.parquet     id, name, supercategory
      gt.parquet             ground-truth instances (replay; recall figures)
      features.npy           optional input features, rows aligned with masks
      trees/nodes.parquet    the forest (crowdprop.tree.Forest)
      trees/order.parquet
      golds.parquet          gold pool: mask_row, label
      state/round=00001/     one folder per completed round:
          questions.parquet hits.parquet assignments.parquet answers.parquet
          decisions.parquet spend.parquet blocks.parquet hits_done.parquet ...
      journal/round=00002/   the round in progress: its frozen plan (plan.json,
                             questions.parquet), what was published, received and
                             settled, each recorded before it is acted on
      report.json

A round folder is written as ``state/.round=0000k.tmp`` and renamed into place,
so it exists complete or not at all; the last complete round is where ``run``
continues. The journal makes a round in progress safe to kill: HIT tokens are
recorded before CreateHIT, answers before approval, approvals before they are paid.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config as config_mod
from ..errors import StateError
from ..io import atomic_write_text, read_parquet, write_parquet
from ..schema import MASK_COLUMNS
from ..tree import Forest

_HELD: dict[Path, int] = {}
"""Run directories whose lock this process holds, with the nesting depth (the lock is re-entrant
within a process, exclusive between processes)."""

ROUND_TABLES = ("questions", "hits", "assignments", "answers", "decisions", "spend", "blocks", "audits", "verdicts",
                "controls", "hits_done")


def _nonce_at(path) -> str | None:
    """The nonce recorded in ``path/campaign.json``, or None (no such directory, unreadable)."""
    try:
        return json.loads((Path(path) / "campaign.json").read_text()).get("nonce")
    except (OSError, TypeError, ValueError, AttributeError):
        return None


REQUIRED_ROUND_TABLES = ("questions", "hits", "assignments", "answers", "decisions", "spend", "blocks")
"""Tables every committed round folder holds (rounds committed by every version): a folder
without one of them is refused, never read as a round with nothing in it."""

_TEXT, _INT, _NUM = "text", "integer", "number"
TABLE_KINDS: dict[str, dict[str, str]] = {
    "masks": {c: _TEXT if t == "object" else _NUM if t.startswith("float") else _INT for c, t in MASK_COLUMNS.items()},
    "images": {"id": _INT, "file_name": _TEXT, "height": _INT, "width": _INT},
    "categories": {"id": _INT, "name": _TEXT},
    "golds": {"mask_row": _INT, "label": _INT},
    "questions": {"question_id": _TEXT, "round": _INT, "mask_row": _INT, "node_id": _INT, "is_gold": _INT,
                  "gold_label": _INT, "token": _TEXT},
    "hits": {"token": _TEXT, "hit_id": _TEXT, "round": _INT, "n_questions": _INT, "assignments": _INT,
             "reward_usd": _NUM, "reward_cents": _INT, "n_submitted": _INT, "expired": _INT},
    "assignments": {"assignment_id": _TEXT, "hit_id": _TEXT, "token": _TEXT, "worker_id": _TEXT, "round": _INT,
                    "n_questions": _INT, "n_gold": _INT, "n_gold_correct": _INT, "work_seconds": _NUM,
                    "approved": _INT, "reward_usd": _NUM, "fee_usd": _NUM, "reward_cents": _INT, "fee_cents": _INT},
    "answers": {"question_id": _TEXT, "round": _INT, "mask_row": _INT, "worker_id": _TEXT, "assignment_id": _TEXT,
                "hit_id": _TEXT, "label": _INT, "is_gold": _INT, "used": _INT},
    "decisions": {"round": _INT, "node_id": _INT, "decision": _TEXT, "free": _INT, "size": _INT},
    "spend": {"round": _INT, "assignment_id": _TEXT, "kind": _TEXT, "usd": _NUM, "cents": _INT},
    "blocks": {"worker_id": _TEXT, "round": _INT, "kind": _TEXT},
}
"""What each column of the run directory's tables holds: numbers (``integer``, ``number``;
booleans count) or ``text``. A file changed outside crowdprop whose column holds text where
numbers belong, or numbers where text belongs, is refused with one line instead of failing
somewhere later."""
_ACCEPT = {_INT: "iubf", _NUM: "iubf"}  # numbers of any width; an integer column with a gap reads as float

log = logging.getLogger(__name__)


def check_kinds(df: pd.DataFrame, name: str, path) -> pd.DataFrame:
    """``df`` (table ``name`` read from ``path``), or :class:`StateError` naming the first column
    whose values are not what :data:`TABLE_KINDS` says. Empty tables pass (no values)."""
    if len(df) == 0:
        return df
    for col, kind in TABLE_KINDS.get(name, {}).items():
        if col not in df:
            continue
        text = df[col].dtype.kind in "OSU" or pd.api.types.is_string_dtype(df[col])
        if (kind == _TEXT) != text or (not text and df[col].dtype.kind not in _ACCEPT[kind]):
            raise StateError(f"{path}: field '{col}': expected {kind} values, found {df[col].dtype}; the file was "
                             "changed outside crowdprop (restore it from a copy)")
    return df


def read_table(path, name: str | None = None) -> pd.DataFrame:
    """A Parquet file of the run directory, its columns checked (:func:`check_kinds`); a file
    that is not Parquet (cut short, overwritten) is a :class:`StateError`, not a traceback."""
    import pyarrow as pa

    try:
        df = read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise StateError(f"{path}: unreadable Parquet file ({reason}); the run directory was damaged: restore "
                         "this file from a copy") from None
    return check_kinds(df, name or Path(path).stem, path)


def round_dirname(r: int) -> str:
    return f"round={r:05d}"


class RunDir:
    """Read and write one campaign's run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- static inputs -------------------------------------------------------------------------
    def require(self) -> "RunDir":
        if not self.path.is_dir():
            raise StateError(f"{self.path}: not a run directory (create one with 'crowdprop init' or 'crowdprop replay')")
        for name in ("config.json", "campaign.json", "masks.parquet"):
            if not (self.path / name).exists():
                raise StateError(f"{self.path}: incomplete run directory, {name} is missing")
        return self

    @cached_property
    def config(self) -> config_mod.Config:
        try:
            return config_mod.load_json(self.path / "config.json")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StateError(f"{self.path / 'config.json'}: unreadable: {e}") from None
        except RecursionError:
            raise StateError(f"{self.path / 'config.json'}: unreadable: JSON nested too deeply") from None

    @cached_property
    def campaign(self) -> dict:
        p = self.path / "campaign.json"
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StateError(f"{p}: unreadable: {e}") from None
        except RecursionError:
            raise StateError(f"{p}: unreadable: JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise StateError(f"{p}: unreadable: expected a JSON object (campaign_id, crowd, ...), "
                             f"found a JSON {type(data).__name__}")
        if not isinstance(data.get("campaign_id"), str) or not data["campaign_id"]:
            raise StateError(f"{p}: field 'campaign_id': missing or not text (crowdprop init writes it)")
        crowd = data.get("crowd")
        if not isinstance(crowd, dict) or not isinstance(crowd.get("kind"), str):
            raise StateError(f"{p}: field 'crowd': missing, or without a 'kind' (simulated, mturk-local or mturk)")
        return data

    def write_campaign(self, data: dict) -> None:
        atomic_write_text(self.path / "campaign.json", json.dumps(data, indent=2, sort_keys=True))
        self.__dict__.pop("campaign", None)

    @cached_property
    def masks(self) -> pd.DataFrame:
        df = read_table(self.path / "masks.parquet")
        missing = [c for c in MASK_COLUMNS if c not in df]
        if missing:
            raise StateError(f"{self.path / 'masks.parquet'}: field '{missing[0]}': column missing")
        return df

    def table(self, name: str) -> pd.DataFrame | None:
        p = self.path / f"{name}.parquet"
        return read_table(p) if p.exists() else None

    @property
    def has_forest(self) -> bool:
        return (self.path / "trees" / "nodes.parquet").exists()

    @cached_property
    def forest(self) -> Forest:
        if not self.has_forest:
            raise StateError(f"{self.path}: no cluster trees yet")
        return Forest.from_tables(read_table(self.path / "trees" / "nodes.parquet"),
                                  read_table(self.path / "trees" / "order.parquet"))

    def write_forest(self, forest: Forest) -> None:
        write_parquet(self.path / "trees" / "order.parquet", forest.order_table())
        write_parquet(self.path / "trees" / "nodes.parquet", forest.nodes_table())
        self.__dict__.pop("forest", None)

    @cached_property
    def golds(self) -> pd.DataFrame:
        t = self.table("golds")
        return t if t is not None else pd.DataFrame({"mask_row": pd.Series(dtype=np.int64),
                                                      "label": pd.Series(dtype=np.int64)})

    # -- one writer at a time -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory's lock for the duration of a ``with`` block.

        An OS file lock (flock) on ``RUN_DIR/.lock``: a second process is refused with a
        message naming the holder's pid; a lock left by a process that died is released
        by the OS and taken over (the old pid is logged).
        """
        import fcntl
        import logging
        import socket

        key = self.path.resolve()
        if _HELD.get(key):  # this process holds it already (e.g. `crowdprop run` around Campaign.run)
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        path = self.path / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise StateError(f"{self.path}: already in use by another crowdprop process ({holder}); "
                             f"wait for it to finish or stop it") from None
        old = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if old:
            logging.getLogger(__name__).warning("%s: taking over a stale lock (%s)", self.path, old)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        _HELD[key] = 1
        try:
            yield self
        finally:
            _HELD.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def clean_temporaries(self) -> int:
        """Remove what a killed writer left behind: ``.NAME.*.tmp`` files of atomic writes
        and half-written ``state/.round=*.tmp`` folders; put back the ``_COMPLETE`` marker of
        a committed round folder that lost it (see :meth:`rounds`). Call it holding the lock."""
        n = 0
        for p in self.path.rglob(".*.tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        for r in self.rounds():
            marker = self.state_dir / round_dirname(r) / "_COMPLETE"
            if not marker.exists():
                atomic_write_text(marker, "")
                log.warning("%s: its _COMPLETE marker was missing; every table of the round is there, so it "
                            "was put back", marker.parent)
        return n

    # -- rounds --------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    def rounds(self) -> list[int]:
        """The committed rounds, in order.

        A round folder appears by renaming a complete temporary folder, so ``state/round=k``
        is committed even when its ``_COMPLETE`` marker was lost (a copy that skipped empty
        files): it counts, and :meth:`clean_temporaries` puts the marker back. A round
        folder without one of :data:`REQUIRED_ROUND_TABLES` is refused (StateError), never
        counted as a round that spent and asked nothing."""
        if not self.state_dir.exists():
            return []
        out = []
        for p in self.state_dir.iterdir():
            m = re.fullmatch(r"round=(\d+)", p.name)
            if not m or not p.is_dir():
                continue
            missing = [t for t in REQUIRED_ROUND_TABLES if not (p / f"{t}.parquet").exists()]
            if missing:
                marked = (p / "_COMPLETE").exists()
                raise StateError(
                    f"{p}: field '{missing[0]}.parquet': missing from {'committed ' if marked else ''}round "
                    f"{int(m[1])} ({len(missing)} of its {len(REQUIRED_ROUND_TABLES)} tables missing); the run "
                    "directory was changed outside crowdprop (a copy cut short?): restore this folder from a copy")
            out.append(int(m[1]))
        return sorted(out)

    def read_rounds(self, name: str, upto: int | None = None) -> pd.DataFrame:
        frames = []
        for r in self.rounds():
            if upto is not None and r > upto:
                break
            p = self.state_dir / round_dirname(r) / f"{name}.parquet"
            if p.exists():
                frames.append(read_table(p, name))
        frames = [f for f in frames if len(f)]
        if not frames:
            p = None
            for r in self.rounds():
                p = self.state_dir / round_dirname(r) / f"{name}.parquet"
            return read_table(p, name).iloc[:0] if p is not None and p.exists() else pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def commit_round(self, r: int, tables: dict[str, pd.DataFrame]) -> None:
        """Write one round's tables as a folder that appears complete or not at all.

        Every name of :data:`ROUND_TABLES` is required; further tables given are written too."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        final = self.state_dir / round_dirname(r)
        if final.exists():
            raise StateError(f"{final}: round {r} is already committed")
        tmp = self.state_dir / f".{round_dirname(r)}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        missing = [name for name in ROUND_TABLES if name not in tables]
        if missing:
            raise ValueError(f"round {r}: table(s) {', '.join(missing)} missing from the commit")
        try:
            for name, df in tables.items():
                write_parquet(tmp / f"{name}.parquet", df)
            atomic_write_text(tmp / "_COMPLETE", "")
            os.replace(tmp, final)
        except BaseException:  # a full disk: leave no half-written folder behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.journal_dir(r), ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty
            (self.path / "journal").rmdir()

    def empty_like_last(self, name: str) -> pd.DataFrame:
        """An empty table with the columns of ``name`` in the last committed round that has it."""
        for r in reversed(self.rounds()):
            p = self.state_dir / round_dirname(r) / f"{name}.parquet"
            if p.exists():
                return read_parquet(p).iloc[:0]
        return pd.DataFrame()

    # -- whose HITs: the run directory's nonce --------------------------------------------------
    @property
    def nonce(self) -> str:
        """This run directory's nonce (campaign.json), part of every HIT token: a copy of the
        directory gets its own (:meth:`claim_home`), so it never adopts the original's HITs."""
        return str(self.campaign.get("nonce", ""))

    @property
    def owned_from_round(self) -> int:
        """The first round whose HITs are this directory's (a copy leaves earlier ones to the original)."""
        return int(self.campaign.get("owned_from_round", 1) or 1)

    def claim_home(self, next_round: int) -> str | None:
        """Record where this run directory lives and recognise a copy of it. Call holding the lock.

        ``campaign.json`` keeps ``home`` (host, path, device and inode of the directory) next
        to ``nonce``. The same directory (same path, or same device and inode: moved) keeps
        its nonce. A directory whose recorded home is another directory on this host that
        still exists with the same nonce is a copy: it gets a fresh nonce, the rounds from
        ``next_round`` on are its own (earlier HITs stay with the original), and the round
        in progress, whose HITs belong to the original, is dropped from its journal to be
        planned again. Replays (simulated crowds) share nothing and keep their nonce.
        Returns a line saying what happened, or None.
        """
        import secrets
        import socket

        data = dict(self.campaign)
        kind = (data.get("crowd") or {}).get("kind", "simulated")
        st = self.path.resolve().stat()
        here = {"host": socket.gethostname(), "path": str(self.path.resolve()), "device": int(st.st_dev),
                "inode": int(st.st_ino)}
        home = data.get("home")
        note = None
        if kind != "mturk":
            return None
        if not data.get("nonce") or not isinstance(home, dict):
            data.setdefault("nonce", secrets.token_hex(8))
        elif home == here:
            return None
        elif home.get("host") == here["host"] and (home.get("path") == here["path"] or (
                home.get("device"), home.get("inode")) == (here["device"], here["inode"])):
            note = f"{self.path}: moved from {home.get('path')}; its HITs go on with it"
        elif home.get("host") == here["host"] and _nonce_at(home.get("path")) == data["nonce"]:
            data["nonce"] = secrets.token_hex(8)
            data["owned_from_round"] = int(next_round)
            shutil.rmtree(self.path / "journal", ignore_errors=True)
            note = (f"{self.path}: a copy of {home.get('path')}; it publishes HITs of its own from round "
                    f"{next_round} on, and leaves the HITs published there (the round in progress included) "
                    "to that directory")
        else:
            note = (f"{self.path}: was at {home.get('host')}:{home.get('path')}; taken as moved here (its HITs go "
                    "on with it): if that directory is still in use, stop one of them")
        data["home"] = here
        self.write_campaign(data)
        return note

    # -- the journal of the round in progress ---------------------------------------------------
    def journal_dir(self, r: int) -> Path:
        return self.path / "journal" / round_dirname(r)

    def journal_write(self, r: int, name: str, df: pd.DataFrame) -> None:
        write_parquet(self.journal_dir(r) / f"{name}.parquet", df)

    def journal_read(self, r: int, name: str) -> pd.DataFrame | None:
        p = self.journal_dir(r) / f"{name}.parquet"
        return read_table(p, f"journal {name}") if p.exists() else None

    def journal_append(self, r: int, name: str, record: dict) -> None:
        """Append one JSON line and fsync it before returning."""
        d = self.journal_dir(r)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{name}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def journal_lines(self, r: int, name: str) -> list[dict]:
        p = self.journal_dir(r) / f"{name}.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill mid-write: everything after it is unwritten
        return out
