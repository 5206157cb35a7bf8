"""A video run directory on disk (the layout is :mod:`crowdprop.video.run`'s): reading its inputs,
rounds and tables, committing a round atomically, the run's crowd and campaign id, its lock.

Per-frame arrays (frames, ground truth, unit maps, flows, each round's label maps) are stored as
*chunk folders*: ``NAME/meta.json`` (length, chunk size, each array's per-frame shape and dtype)
and ``NAME/00000.npz``, ``NAME/00001.npz``, ... (compressed; chunk ``i`` holds frames
``[i * chunk, (i + 1) * chunk)`` of every array). :class:`ChunkedArray` reads one array of such a
folder lazily, a chunk at a time (a few chunks cached), so a 10,000-frame video is never in
memory at once. A run directory of the first version (``frames.npz``, ``pred.npz``, ...) is
still read, whole."""
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


META = "meta.json"


class ChunkedArray:
    """One array of a chunk folder, ``(N, ...)``, read lazily: ``len``, ``shape``, ``dtype``,
    ``a[i]``, ``a[i:j]``, ``a[index_array]``, :meth:`chunk_slices`, ``np.asarray(a)`` (the whole
    array, for small runs and the code that wants it all)."""

    def __init__(self, folder: Path, key: str, *, cache: int = 3):
        self.folder = Path(folder)
        self.key = key
        try:
            meta = json.loads((self.folder / META).read_text())
        except FileNotFoundError:
            raise StateError(f"{self.folder / META}: missing; not a complete video run directory") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StateError(f"{self.folder / META}: damaged (not JSON)") from None
        if key not in meta.get("arrays", {}):
            raise StateError(f"{self.folder / META}: no array '{key}'")
        a = meta["arrays"][key]
        self.length = int(meta["length"])
        self.chunk = int(meta["chunk"])
        self.shape: tuple[int, ...] = (self.length, *map(int, a["shape"]))
        self.dtype = np.dtype(a["dtype"])
        self.ndim = len(self.shape)
        self._cache: dict[int, np.ndarray] = {}
        self._order: list[int] = []
        self._cache_size = max(1, cache)

    def __len__(self) -> int:
        return self.length

    @property
    def n_chunks(self) -> int:
        return (self.length + self.chunk - 1) // self.chunk

    def chunk_slices(self, step: int | None = None):
        """``slice``s covering ``[0, N)``, ``step`` frames each (default: the stored chunks)."""
        step = step or self.chunk
        return [slice(s, min(s + step, self.length)) for s in range(0, self.length, step)]

    def read_chunk(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        p = self.folder / f"{i:05d}.npz"
        try:
            with np.load(p) as z:
                arr = z[self.key]
        except FileNotFoundError:
            raise StateError(f"{p}: missing; not a complete video run directory") from None
        except (ValueError, OSError, EOFError, KeyError) as e:
            raise StateError(f"{p}: damaged ({type(e).__name__})") from None
        self._cache[i] = arr
        self._order.append(i)
        if len(self._order) > self._cache_size:
            self._cache.pop(self._order.pop(0), None)
        return arr

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self.length if idx < 0 else 0)
            if not 0 <= i < self.length:
                raise IndexError(idx)
            return self.read_chunk(i // self.chunk)[i % self.chunk]
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.length)
            if step != 1:
                return self[np.arange(start, stop, step)]
            if stop <= start:
                return np.zeros((0, *self.shape[1:]), self.dtype)
            parts = []
            for c in range(start // self.chunk, (stop - 1) // self.chunk + 1):
                lo = c * self.chunk
                parts.append(self.read_chunk(c)[max(start - lo, 0):min(stop - lo, self.chunk)])
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        ix = np.asarray(idx)
        if ix.dtype == bool:
            ix = np.flatnonzero(ix)
        out = np.empty((len(ix), *self.shape[1:]), self.dtype)
        for n, i in enumerate(ix.ravel()):
            out[n] = self[int(i)]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[0:self.length]
        return out.astype(dtype) if dtype is not None else out

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npz"))


class ChunkWriter:
    """Writes arrays frame block by frame block into a chunk folder (see the module's docstring);
    :meth:`close` writes ``meta.json`` last, so a folder without it is incomplete."""

    def __init__(self, folder: Path, chunk: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.chunk = int(chunk)
        self._buf: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._written = 0
        self._meta: dict[str, dict] = {}

    def append(self, **arrays: np.ndarray) -> None:
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise ValueError("arrays of one append must have the same length")
        if self._meta and set(arrays) != set(self._meta):
            raise ValueError(f"expected arrays {sorted(self._meta)}, got {sorted(arrays)}")
        for k, a in arrays.items():
            self._meta.setdefault(k, {"shape": list(a.shape[1:]), "dtype": a.dtype.str})
            self._buf.setdefault(k, []).append(a)
        self._buffered += n.pop()
        while self._buffered >= self.chunk:
            self._flush(self.chunk)

    def _flush(self, n: int) -> None:
        out: dict = {}
        rest: dict = {}
        for k, parts in self._buf.items():
            a = parts[0] if len(parts) == 1 else np.concatenate(parts)
            out[k], rest[k] = a[:n], a[n:]
        with open(self.folder / f"{self._written // self.chunk:05d}.npz", "wb") as f:
            np.savez_compressed(f, **out)
        self._buf = {k: [v] for k, v in rest.items()}
        self._buffered -= n
        self._written += n

    def close(self, arrays: dict[str, tuple[tuple[int, ...], str]] | None = None) -> None:
        """Flush and write ``meta.json``; ``arrays``: shapes and dtypes of an empty folder's arrays."""
        if self._buffered:
            self._flush(self._buffered)
        meta = self._meta or {k: {"shape": list(s), "dtype": np.dtype(d).str} for k, (s, d) in (arrays or {}).items()}
        atomic_write_text(self.folder / META, json.dumps({"length": self._written, "chunk": self.chunk,
                                                          "arrays": meta}) + "\n")


def chunk_bytes(folder: Path) -> int:
    """Bytes of a chunk folder's (or a legacy ``.npz``'s) files on disk."""
    folder = Path(folder)
    if folder.is_file():
        return folder.stat().st_size
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0


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

    # Lazy per-frame arrays (ChunkedArray; a first-version run directory's whole arrays). The
    # round loop reads these; frames(), gt(), units(), flows() and pred() below load them whole.
    def _lazy(self, name: str, key: str, legacy_key: str | None = None):
        d = self.path / name
        if d.is_dir():
            return ChunkedArray(d, key)
        return load_npz(self.path / f"{name}.npz")[legacy_key or key]

    def frame_store(self):
        return self._lazy("frames", "frames")

    def gt_store(self):
        if (self.path / "gt").is_dir() or (self.path / "gt.npz").exists():
            return self._lazy("gt", "gt")
        return None

    def unit_store(self) -> dict:
        """``superpixels``, ``units``, ``regions`` (lazy maps), ``unit_frame``, ``sp_frame`` (arrays)."""
        if not (self.path / "units").is_dir():
            return load_npz(self.path / "units.npz")
        out: dict = {k: ChunkedArray(self.path / "units", k) for k in ("superpixels", "units", "regions")}
        out.update(load_npz(self.path / "units" / "index.npz"))
        return out

    def flow_store(self) -> dict:
        """``fwd``, ``bwd`` (float16 (T-1, H, W, 2)), ``occ_fwd``, ``occ_bwd`` (bool), lazy."""
        if not (self.path / "flows").is_dir():
            return load_npz(self.path / "flows.npz")
        return {k: ChunkedArray(self.path / "flows", k) for k in ("fwd", "bwd", "occ_fwd", "occ_bwd")}

    def pred_store(self, r: int | None = None, name: str = "pred"):
        """A round's final label maps (``name="model_pred"``: the network's own), lazy."""
        r = self.rounds()[-1] if r is None else r
        d = self.round_dir(r) / name
        return ChunkedArray(d, "labels") if d.is_dir() else load_npz(self.round_dir(r) / f"{name}.npz")["labels"]

    def frames(self) -> np.ndarray:
        return np.asarray(self.frame_store())

    def gt(self) -> np.ndarray | None:
        g = self.gt_store()
        return None if g is None else np.asarray(g)

    def units(self) -> dict:
        return {k: np.asarray(v) for k, v in self.unit_store().items()}

    def flows(self) -> dict:
        z = {k: np.asarray(v) for k, v in self.flow_store().items()}
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
        return np.asarray(self.pred_store(r))

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
            elif isinstance(value, Path) and value.is_dir():  # a chunk folder written in the journal
                shutil.copytree(value, p)
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
