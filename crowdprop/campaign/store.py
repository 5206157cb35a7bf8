"""The run directory: every fact of a campaign, in Parquet, written atomically.

Layout (docs/run-directory.md describes every file and column)::

    RUN_DIR/
      config.json            resolved configuration (crowdprop.config)
      campaign.json          campaign id, crowd kind, sources, version, schema_version
      masks.parquet          one row per predicted mask (crowdprop.schema)
      images.parquet         id, file_name, height, width, coco_url
      categories.parquet     id, name, supercategory
      gt.parquet             ground-truth instances (replay; recall figures)
      features.npy           optional input features, rows aligned with masks
      trees/nodes.parquet    the forest (crowdprop.tree.Forest)
      trees/order.parquet
      golds.parquet          gold pool: mask_row, mask_id, label
      labels.parquet         the final label of every mask, rewritten after each round commit
      state/<table>/round-00001.parquet
                             one folder per round table (:data:`ROUND_TABLES`), one file
                             per committed round, each with its ``round`` column
      journal/round=00002/   the round in progress: its frozen plan (plan.json,
                             questions.parquet), what was published, received and
                             settled, each recorded before it is acted on
      report.json

Every table is written with its declared schema (:mod:`.tables`). A round is committed
in two steps: its tables are written into ``state/.round-0000k.tmp`` and that folder is
renamed ``state/.round-0000k.commit`` (the commit: the round exists complete or not at
all); then each file is moved to ``state/<table>/round-0000k.parquet`` and the folder
removed. A crash between the two leaves the round committed and read from where its
files are; the next run (:meth:`RunDir.clean_temporaries`) finishes the moves. The last
committed round is where ``run`` continues. The journal makes a round in progress safe
to kill: HIT tokens are recorded before CreateHIT, answers before approval, approvals
before they are paid.
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

from .. import __version__
from .. import config as config_mod
from ..errors import StateError
from .. import io as _io
from ..io import _fsync_dir, atomic_write_text, read_parquet, write_parquet
from ..schema import MASK_COLUMNS
from ..tree import Forest
from . import tables as tbl
from .tables import ROUND_TABLES, SCHEMA_VERSION

_HELD: dict[Path, int] = {}
"""Run directories whose lock this process holds, with the nesting depth (the lock is re-entrant
within a process, exclusive between processes)."""



LOCK_OWNER = ".lock.owner"
"""Beside ``RUN_DIR/.lock``: who holds the run directory's lock (removed when it is released)."""


def _read_owner(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()[:200]
    except OSError:
        return ""


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
TABLE_KINDS: dict[str, dict[str, str]] = {name: tbl.kinds(name) for name in tbl.SCHEMAS}
"""What each column of the run directory's tables holds (from :data:`.tables.SCHEMAS`): numbers
(``integer``, ``number``; booleans count) or ``text``. A file changed outside crowdprop whose
column holds text where numbers belong, or numbers where text belong, is refused with one
line instead of failing somewhere later."""
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


def read_table(path, name: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file of the run directory, its columns checked (:func:`check_kinds`); a file
    that is not Parquet (cut short, overwritten) is a :class:`StateError`, not a traceback.
    ``columns``: read only those (each must be in the file)."""
    import pyarrow as pa

    try:
        df = read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    return check_kinds(df, name or Path(path).stem, path)


def _unreadable(path, e: BaseException) -> StateError:
    reason = " ".join(str(e).split())[:200]
    return StateError(f"{path}: unreadable Parquet file ({reason}); the run directory was damaged: restore "
                      "this file from a copy")


def read_schema(path):
    """The Arrow schema of a Parquet file of the run directory (its footer only), or :class:`StateError`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable(path, e) from None


def read_arrow(path, name: str, columns: list[str] | None = None):
    """A Parquet file of the run directory as an Arrow table (no pandas), its column types checked
    against :data:`TABLE_KINDS` like :func:`check_kinds` does; :class:`StateError` when unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    if table.num_rows == 0:
        return table
    for col, kind in TABLE_KINDS.get(name, {}).items():
        if col not in table.column_names:
            continue
        t = table.schema.field(col).type
        text = pa.types.is_string(t) or pa.types.is_large_string(t)
        number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        if (kind == _TEXT and not text) or (kind != _TEXT and not number):
            raise StateError(f"{path}: field '{col}': expected {kind} values, found {t}; the file was "
                             "changed outside crowdprop (restore it from a copy)")
    return table


def round_dirname(r: int) -> str:
    """The journal folder of round ``r`` (``journal/round=0000r``)."""
    return f"round={r:05d}"


def round_filename(r: int) -> str:
    """The file of round ``r`` in each table folder: ``state/<table>/round-0000r.parquet``."""
    return f"round-{r:05d}.parquet"


_ROUND_FILE = re.compile(r"round-(\d+)\.parquet")
_STAGED = re.compile(r"\.round-(\d+)\.commit")


def write_table(path, name: str, df: pd.DataFrame, mask_ids: np.ndarray | None = None):
    """Write ``df`` atomically to ``path`` as table ``name`` of :mod:`.tables` (its declared schema);
    returns the Arrow table written."""
    import pyarrow.parquet as pq

    table = tbl.arrow_table(name, df, mask_ids)
    with _io.atomic_path(path) as tmp:  # looked up on the module: tests fill the disk through it
        pq.write_table(table, tmp, compression="zstd")
    return table


def _column(table, name: str) -> np.ndarray:
    """One column of an Arrow table as a NumPy array (without a copy where Arrow allows)."""
    col = table.column(name)
    return col.chunk(0).to_numpy() if col.num_chunks == 1 else col.to_numpy()


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
        self.check_schema()
        self.rounds()  # a round folder missing a table is refused before anything is written
        return self

    def check_schema(self) -> None:
        """A run directory of another schema version (campaign.json ``schema_version``; none: 1)
        is one line naming the file and both versions: its tables are laid out differently."""
        found = self.campaign.get("schema_version", 1)
        if found != SCHEMA_VERSION:
            by = self.campaign.get("version", "?")
            hint = ("finish or read it with the crowdprop that made it" if isinstance(found, int) and
                    found < SCHEMA_VERSION else "it needs a newer crowdprop")
            raise StateError(f"{self.path / 'campaign.json'}: field 'schema_version': run directory schema version "
                             f"{found} (crowdprop {by}), this crowdprop {__version__} reads version {SCHEMA_VERSION} "
                             f"only; {hint}")

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
        """masks.parquet, every column (the RLE strings included: see :attr:`mask_meta`)."""
        meta = self.__dict__.get("mask_meta")
        if meta is not None:  # the other columns are read already: only the RLE strings are missing
            rle = self._read_masks(["rle"])["rle"]
            df = meta.copy(deep=False)
            df.insert(list(MASK_COLUMNS).index("rle"), "rle", rle.to_numpy() if len(rle) else rle)
            return df
        return self._read_masks(None)

    @cached_property
    def mask_meta(self) -> pd.DataFrame:
        """masks.parquet without the RLE strings: every column a round needs. The strings are
        most of the table's memory and of its reading time (at 1M masks, 0.45 of 0.7 CPU
        seconds); only what draws a mask needs them (:attr:`masks`). The full table when
        that is read already."""
        if "masks" in self.__dict__:
            return self.masks
        return self._read_masks([c for c in MASK_COLUMNS if c != "rle"])

    def _read_masks(self, columns: list[str] | None) -> pd.DataFrame:
        p = self.path / "masks.parquet"
        names = read_schema(p).names
        missing = [c for c in MASK_COLUMNS if c not in names]
        if missing:
            raise StateError(f"{p}: field '{missing[0]}': column missing")
        return read_table(p, "masks", columns=columns)

    @property
    def n_masks(self) -> int:
        """How many masks the run has (rows of masks.parquet; from its footer unless the table is read)."""
        for key in ("mask_meta", "masks"):
            if key in self.__dict__:
                return len(self.__dict__[key])
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(self.path / "masks.parquet").metadata.num_rows)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a damaged footer
            raise _unreadable(self.path / "masks.parquet", e) from None

    @property
    def mask_ids(self) -> np.ndarray:
        """masks.parquet ``mask_id`` by mask row."""
        return self.mask_meta["mask_id"].to_numpy(np.int64)

    def table(self, name: str) -> pd.DataFrame | None:
        p = self.path / f"{name}.parquet"
        return read_table(p) if p.exists() else None

    def write_table(self, name: str, df: pd.DataFrame, mask_ids: np.ndarray | None = None) -> None:
        """Write table ``name`` (``RUN_DIR/<name>.parquet``) atomically with its declared schema;
        ``mask_id`` comes from masks.parquet (or ``mask_ids``) when ``df`` has only ``mask_row``."""
        if mask_ids is None and "mask_id" in tbl.SCHEMAS[name].names and "mask_id" not in df and len(df):
            mask_ids = self.mask_ids
        write_table(self.path / f"{name}.parquet", name, df, mask_ids)
        if name == "golds":
            self.__dict__.pop("golds", None)

    def write_labels(self, final: np.ndarray, source: np.ndarray, decided_round: np.ndarray, *,
                     wait: bool = True) -> bool:
        """labels.parquet: the final label of every mask (codes of
        :func:`crowdprop.policy.controller.mask_labels`), written atomically; not written again
        when the file holds these labels already (its :func:`.tables.labels_digest`, in the
        file's schema metadata, is theirs). Returns whether it is written.

        ``wait=False`` (the round loop, holding the lock): the file is built and written in a
        thread (at 10M masks, about 2 CPU seconds that Arrow spends mostly without the GIL) while
        the caller goes on with the next round. The next call, :meth:`wait_labels` and the end of
        :meth:`lock` wait for it (and raise what it raised): labels.parquet is on disk before the
        lock is released, so no other process ever sees an older file replace a newer one."""
        import pyarrow.parquet as pq

        self.wait_labels()
        p = self.path / "labels.parquet"
        digest = tbl.labels_digest(final, source, decided_round)
        if self.__dict__.get("_labels_digest") != (digest, self._stamp(p)) and p.exists():
            try:
                meta = pq.read_schema(p).metadata or {}
            except Exception:  # noqa: BLE001 - a damaged file is written again
                meta = {}
            if meta.get(tbl.LABELS_DIGEST.encode(), b"").decode() == digest:
                self.__dict__["_labels_digest"] = (digest, self._stamp(p))
        if self.__dict__.get("_labels_digest") == (digest, self._stamp(p)):
            return False
        meta_cols = self.mask_meta  # read only
        arrays = (np.array(final, dtype=np.int64), np.array(source, dtype=np.int64),
                  np.array(decided_round, dtype=np.int64))  # copies: the caller may change its arrays

        def write() -> None:
            table = tbl.labels_table(meta_cols, *arrays, digest=digest)
            with _io.atomic_path(p) as tmp:
                pq.write_table(table, tmp, **tbl.LABELS_WRITE)
            self.__dict__["_labels_digest"] = (digest, self._stamp(p))

        import threading

        box: dict = {}

        def run() -> None:
            try:
                write()
            except BaseException as e:  # noqa: BLE001 - raised again by wait_labels
                box["error"] = e

        t = threading.Thread(target=run, name="crowdprop-labels", daemon=False)
        self.__dict__["_labels_writer"] = (t, box)
        t.start()
        if wait:
            self.wait_labels()
        return True

    def wait_labels(self) -> None:
        """Wait until labels.parquet being written (:meth:`write_labels`) is on disk; raise what
        writing it raised."""
        pending = self.__dict__.pop("_labels_writer", None)
        if pending is None:
            return
        t, box = pending
        t.join()
        if "error" in box:
            raise box["error"]

    @staticmethod
    def _stamp(p: Path) -> tuple[int, int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    @property
    def has_forest(self) -> bool:
        return (self.path / "trees" / "nodes.parquet").exists()

    @cached_property
    def forest(self) -> Forest:
        """The forest, read from its two Parquet files straight into NumPy arrays (no pandas: at
        1M masks, 2M nodes, 0.25 CPU seconds against 0.6). The arrays are read-only views of
        what Arrow read."""
        if not self.has_forest:
            raise StateError(f"{self.path}: no cluster trees yet")
        nodes = read_arrow(self.path / "trees" / "nodes.parquet", "trees/nodes")
        order = read_arrow(self.path / "trees" / "order.parquet", "trees/order")
        for t, name, cols in ((nodes, "nodes", Forest.NODE_COLUMNS), (order, "order", ("pos", "row"))):
            missing = [c for c in cols if c not in t.column_names]
            if missing:
                raise StateError(f"{self.path / 'trees' / (name + '.parquet')}: field '{missing[0]}': column missing")
            if any(t.column(c).null_count for c in cols):
                bad = next(c for c in cols if t.column(c).null_count)
                raise StateError(f"{self.path / 'trees' / (name + '.parquet')}: field '{bad}': empty values; the "
                                 "file was changed outside crowdprop (restore it from a copy)")
        return Forest.from_columns({c: _column(nodes, c) for c in Forest.NODE_COLUMNS},
                                   _column(order, "pos"), _column(order, "row"))

    def write_forest(self, forest: Forest) -> None:
        self.write_table("trees/order", forest.order_table())
        self.write_table("trees/nodes", forest.nodes_table())
        self.__dict__.pop("forest", None)

    @cached_property
    def golds(self) -> pd.DataFrame:
        t = self.table("golds")
        return t if t is not None else tbl.empty("golds")

    # -- one writer at a time -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory's lock for the duration of a ``with`` block.

        An OS file lock on ``RUN_DIR/.lock`` (``filelock``: flock on Linux and macOS, msvcrt on
        Windows) and the holder's pid and host in ``RUN_DIR/.lock.owner`` while it is held: a
        second process is refused with a message naming the holder; a lock left by a process
        that died is released by the OS and taken over (the old holder is logged).
        """
        import logging
        import socket

        from filelock import FileLock, Timeout

        key = self.path.resolve()
        if _HELD.get(key):  # this process holds it already (e.g. `crowdprop run` around Campaign.run)
            _HELD[key] += 1
            try:
                yield self
                self.wait_labels()  # this object's labels.parquet is written when its block ends
            finally:
                _HELD[key] -= 1
            return
        owner = self.path / LOCK_OWNER
        lock = FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = _read_owner(owner) or "unknown"
            raise StateError(f"{self.path}: already in use by another crowdprop process ({holder}); "
                             f"wait for it to finish or stop it") from None
        try:
            old = _read_owner(owner)
            if old:
                logging.getLogger(__name__).warning("%s: taking over a stale lock (%s)", self.path, old)
            owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}", encoding="utf-8")
            _HELD[key] = 1
            try:
                yield self
                self.wait_labels()  # written before another process may take the lock
            finally:
                try:
                    self.wait_labels()
                except BaseException:  # noqa: BLE001 - already unwinding from an error: that one is raised
                    pass
                _HELD.pop(key, None)
                owner.unlink(missing_ok=True)
        finally:
            lock.release()

    def clean_temporaries(self) -> int:
        """Remove what a killed writer left behind: ``.NAME.*.tmp`` files of atomic writes and
        half-written ``state/.round-*.tmp`` folders; finish the commit of a round whose tables
        were committed but not all moved into their table folders (see :meth:`commit_round`).
        Call it holding the lock."""
        n = 0
        for p in self.path.rglob(".*.tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        for r, staged in sorted(self._staged().items()):
            self._publish(r, staged)
            log.warning("%s: round %d was committed but not moved into its table folders; done now", self.path, r)
        return n

    # -- rounds --------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    def round_path(self, name: str, r: int) -> Path:
        """Where table ``name`` of committed round ``r`` is: ``state/<name>/round-0000r.parquet``
        (or, in a commit that was cut short, still in its ``state/.round-0000r.commit`` folder)."""
        final = self.state_dir / name / round_filename(r)
        if not final.exists():
            staged = self.state_dir / f".round-{r:05d}.commit" / f"{name}.parquet"
            if staged.exists():
                return staged
        return final

    def _staged(self) -> dict[int, Path]:
        if not self.state_dir.is_dir():
            return {}
        return {int(m[1]): p for p in self.state_dir.iterdir() if (m := _STAGED.fullmatch(p.name)) and p.is_dir()}

    def _round_files(self, name: str) -> set[int]:
        d = self.state_dir / name
        if not d.is_dir():
            return set()
        return {int(m[1]) for p in d.iterdir() if (m := _ROUND_FILE.fullmatch(p.name))}

    def rounds(self) -> list[int]:
        """The committed rounds, in order.

        A round is committed once its tables are in ``state/.round-k.commit`` (the commit)
        or in their table folders. A round found in some table folders but missing from one
        of :data:`REQUIRED_ROUND_TABLES` is refused (StateError), never counted as a round
        that spent and asked nothing."""
        if not self.state_dir.exists():
            return []
        staged = self._staged()
        files = {name: self._round_files(name) for name in ROUND_TABLES}
        seen = set().union(*files.values()) - set(staged)
        for r in sorted(seen):
            missing = [t for t in REQUIRED_ROUND_TABLES if r not in files[t]]
            if missing:
                raise StateError(
                    f"{self.state_dir / missing[0] / round_filename(r)}: missing from committed round {r} "
                    f"({len(missing)} of its {len(REQUIRED_ROUND_TABLES)} tables missing); the run directory was "
                    "changed outside crowdprop (a copy cut short?): restore this file from a copy")
        return sorted(seen | set(staged))

    def committed_at(self, r: int) -> float | None:
        """When round ``r`` was committed (modification time of its questions file), or None."""
        try:
            return self.round_path("questions", r).stat().st_mtime
        except OSError:
            return None

    def _read_committed(self, p: Path, name: str) -> pd.DataFrame | None:
        """A committed round's table, read once per process: a round's files never change after
        its commit, so a campaign that reloads its state every round reads only the new round.
        Keyed by the file's size and modification time, so a file replaced on disk is read again."""
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        cache = self.__dict__.setdefault("_round_cache", {})
        key = (str(p), st.st_size, st.st_mtime_ns)
        df = cache.get(key)
        if df is None:
            df = read_table(p, name)
            cache[key] = df
        return df

    def _remember(self, p: Path, df: pd.DataFrame) -> None:
        """Put ``df``, the committed table at ``p``, in the cache of :meth:`_read_committed`."""
        try:
            st = p.stat()
        except OSError:
            return
        self.__dict__.setdefault("_round_cache", {})[(str(p), st.st_size, st.st_mtime_ns)] = df

    def read_rounds(self, name: str, upto: int | None = None) -> pd.DataFrame:
        """Table ``name`` of every committed round (up to ``upto``), in round order; an empty
        frame with the table's columns when there is none."""
        frames = []
        for r in self.rounds():
            if upto is not None and r > upto:
                break
            p = self.round_path(name, r)
            df = self._read_committed(p, name)
            if df is not None and len(df):
                frames.append(df)
        if not frames:
            return tbl.empty(name)
        return pd.concat(frames, ignore_index=True)

    def commit_round(self, r: int, tables: dict[str, pd.DataFrame]) -> None:
        """Write one round's tables so that the round is committed completely or not at all.

        Every name of :data:`ROUND_TABLES` is required; each table is written with its declared
        schema (a table that is not declared is a ValueError). The tables are written into
        ``state/.round-0000r.tmp``, which is renamed ``state/.round-0000r.commit`` (the commit);
        then each file moves to ``state/<table>/round-0000r.parquet``."""
        missing = [name for name in ROUND_TABLES if name not in tables]
        if missing:
            raise ValueError(f"round {r}: table(s) {', '.join(missing)} missing from the commit")
        if r in self.rounds():
            raise StateError(f"{self.state_dir}: round {r} is already committed")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".round-{r:05d}.tmp"
        staged = self.state_dir / f".round-{r:05d}.commit"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        mask_ids = None
        written = {}
        try:
            for name, df in tables.items():
                if mask_ids is None and "mask_id" in tbl.SCHEMAS[name].names and len(df):
                    mask_ids = self.mask_ids  # without the RLE strings (mask_meta)
                written[name] = write_table(tmp / f"{name}.parquet", name, df, mask_ids)
            os.replace(tmp, staged)
        except BaseException:  # a full disk: leave no half-written folder behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.state_dir)
        self._publish(r, staged)
        for name, table in written.items():  # what reading the files back gives, without reading them
            if table is not None:
                self._remember(self.round_path(name, r), table.to_pandas())
        shutil.rmtree(self.journal_dir(r), ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty
            (self.path / "journal").rmdir()

    def _publish(self, r: int, staged: Path) -> None:
        """Move the tables of committed round ``r`` from ``staged`` into their table folders."""
        for src in sorted(staged.glob("*.parquet")):
            dest = self.state_dir / src.stem / round_filename(r)
            dest.parent.mkdir(exist_ok=True)
            os.replace(src, dest)
            _fsync_dir(dest.parent)
        staged.rmdir()
        _fsync_dir(self.state_dir)

    def empty_like_last(self, name: str) -> pd.DataFrame:
        """An empty table ``name`` (its declared columns)."""
        return tbl.empty(name)

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
        """Append one JSON line, written before returning and, for a crowd outside this process
        (MTurk, the local endpoint), fsynced: what a HIT or a payment did must survive a crash of
        the machine. A simulated crowd's journal is written without fsync (at 1.8 ms an fsync,
        thousands of records a round at 10M masks took seconds): it has nothing outside the process
        to reconcile with, and a killed process loses nothing written."""
        d = self.journal_dir(r)
        d.mkdir(parents=True, exist_ok=True)
        _io.append_jsonl(d / f"{name}.jsonl", record, sync=not self._simulated)

    @cached_property
    def _simulated(self) -> bool:
        try:
            return (self.campaign.get("crowd") or {}).get("kind") == "simulated"
        except StateError:
            return False

    def journal_lines(self, r: int, name: str) -> list[dict]:
        """The journal's records; reading stops at a line cut by a kill mid-write."""
        return _io.read_jsonl(self.journal_dir(r) / f"{name}.jsonl")
