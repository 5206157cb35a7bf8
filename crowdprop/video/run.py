"""The video run directory and its round loop.

Layout::

    RUN_DIR/
      campaign.json        kind "video", classes, frame names, sources, seed, the manual labeling's
                           reference (clicks, mIoU)
      config.json          every key of :class:`crowdprop.video.config.VideoConfig`
      frames/              uint8 (T, H, W, 3) as a chunk folder (meta.json, 00000.npz, ...:
                           ``[video] chunk_frames`` frames a compressed file; :mod:`.rundir`)
      gt/                  uint8 (T, H, W) ground truth (replay), a chunk folder
      units/               superpixels (global ids), units (global ids), regions (what a question
                           covers), a chunk folder; index.npz: each unit's and superpixel's frame
      flows/               fwd, bwd (float16), occ_fwd, occ_bwd between neighbouring frames (pair t
                           in the chunk of frame t)
      model/base.pt        the network the campaign started from
      golds.parquet        gold pool: region, frame, truth
      state/round-00000/   the start: the base network's labels (pred/, model_pred/) and metrics.json
      state/round-0000k/   answers.parquet, assignments.parquet, metrics.json, pred/ (the final
                           uint8 label maps: human labels over the network's), model_pred/ (the
                           network's own), both chunk folders, model.pt,
                           hits.parquet (MTurk crowds: every HIT's questions and HIT id)
      journal/round-0000k/ the round in progress: plan.parquet (questions), hits.parquet and
                           events.jsonl (MTurk crowds, :mod:`crowdprop.video.hits`), answers and
                           assignments once the crowd is done (crowd.done), ft.pt (the latest
                           fine-tuning checkpoint), pred/ and model_pred/ as they are written
      hit_images/          the worker pages' pictures (MTurk crowds without s3_bucket)

A run directory of the first version (frames.npz, gt.npz, units.npz, flows.npz, pred.npz) is
still read and continued; the whole arrays are loaded then.

Nothing per pixel of the whole video is held in memory by ``init`` or a round: frames are read
a chunk at a time, inference, uncertainty and unit embeddings go 8 frames at a time (per-unit
sums, since units are numbered frame by frame), fine-tuning reads its pairs' frames, labels and
flows as it draws them, and label maps are written chunk by chunk as they are made. What grows
with the video: per-unit arrays (uncertainty, the embedding: n_units x width float64) and, for
``method = "keyframe"``, the propagation (whole-video label and flow arrays).

A round is written into ``state/.round-0000k.tmp`` and renamed ``state/round-0000k``: it exists
complete or not at all. Every file is replaced atomically (:mod:`crowdprop.io`). A run killed at
any moment and run again ends with the same labels and model as one that was not: the crowd's
work is journaled before fine-tuning starts, fine-tuning resumes from its last checkpoint, and
every random draw comes from a generator seeded by (seed, round, step).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, StateError
from ..io import atomic_write_text, read_parquet, write_parquet
from . import config as vconfig
from .rundir import CROWDS, KIND, VideoRun, save_npz  # noqa: F401  (KIND, VideoRun: part of this API)
from .crowd import UNKNOWN, run_questions, simulated_workers
from .units import (class_hist, majority_labels, pixel_uncertainty, pooled, superpixels, truth_from_hist,  # noqa: F401
                    unit_maps, unit_truth)

log = logging.getLogger(__name__)

GOLD_POOL = 100


def confusion(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 (K, K) pixel counts, rows ground truth, columns prediction (add blocks' to pool them)."""
    idx = gt.astype(np.int64).ravel() * n_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def miou_of(conf: np.ndarray) -> float:
    """Mean IoU from a confusion matrix (:func:`confusion`)."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    ok = union > 0
    return float((inter[ok] / union[ok]).mean()) if ok.any() else 1.0


def miou(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> float:
    """Mean IoU over the classes present in ``gt`` or ``pred``, pixels of the whole video pooled."""
    return miou_of(confusion(pred, gt, n_classes))


def _blocks(n: int, step: int):
    return [(s, min(s + step, n)) for s in range(0, n, step)]


# -- init ------------------------------------------------------------------------------------------
def init_video(run_dir: str | os.PathLike, *, frames: str | os.PathLike, labels: str | os.PathLike,
               model: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
               config: str | os.PathLike | None = None, seed: int | None = None, overrides: dict | None = None,
               crowd: dict | None = None, engine: str = "local", workers: int | None = None) -> VideoRun:
    """Check every input, then build the run directory in a temporary folder next to it and
    rename it into place (:func:`crowdprop.staging.staged`: a failed init leaves nothing).
    ``crowd``: ``{"kind": "simulated" | "mturk-local" | "mturk", ...}`` (default simulated; all
    but ``mturk`` need ``gt``).

    Frames are streamed: read ``[video] chunk_frames`` at a time into the run directory's chunk
    folders, then superpixels, flows and the network's labels are computed a chunk per task of
    ``engine`` (``local``: in this process, or ``workers`` local processes; ``ray``: Ray tasks,
    :mod:`crowdprop.engine`); every task depends only on its chunk, so the run directory is the
    same whichever engine made it."""
    from ..staging import is_free, staged
    from . import inputs
    from . import model as vmodel

    run_dir = Path(run_dir)
    if not is_free(run_dir):
        raise InputError(run_dir, None, "RUN_DIR", "exists and is not empty")
    ov = dict(overrides or {})
    if seed is not None:
        ov.setdefault("campaign", {})["seed"] = int(seed)
    cfg = vconfig.load(config, ov)
    src = inputs.FrameSource(frames)
    classes = inputs.read_labels(labels)
    model_path = Path(model) if model else sample_model_path()
    net, ck = vmodel.load(model_path)
    inputs.check_model_classes(labels, classes, list(ck["classes"]), model_path)
    gsrc = inputs.GtSource(gt, len(classes), labels, src.count) if gt else None
    crowd = dict(crowd or {"kind": "simulated"})
    if crowd.get("kind") not in CROWDS:
        raise InputError("command line", None, "--crowd", f"must be one of {', '.join(CROWDS)}")
    if crowd["kind"] != "mturk" and gsrc is None:
        raise InputError(frames, None, "--gt", f"a '{crowd['kind']}' crowd answers from ground truth: pass --gt")
    if cfg.video.flow == "raft":  # no weights: one line now, before anything is read
        from .flow import load_raft

        load_raft(cfg.video.flow_weights, where=f"{config or '<defaults>'}: [video] flow_weights")
    sources = {"frames": str(frames), "labels": str(labels), "model": str(model_path), "gt": str(gt) if gt else None}
    with staged(run_dir) as tmp:
        shape = _write_frames(tmp, cfg, src, gsrc)
        (tmp / "model").mkdir()
        shutil.copyfile(model_path, tmp / "model" / "base.pt")
        conf0, manual = _write_derived(tmp, cfg, len(classes), engine=engine, workers=workers)
        vr = _write_campaign(tmp, cfg, classes, src.names, shape, sources, crowd, manual)
        vr.commit_round(0, {"pred": tmp / "journal-init" / "pred", "model_pred": tmp / "journal-init" / "pred",
                            "metrics.json": _metrics(vr, 0, conf0, pd.DataFrame(), pd.DataFrame(), {})})
        shutil.rmtree(tmp / "journal-init")
    return VideoRun(run_dir).require()


def _write_frames(tmp: Path, cfg: vconfig.VideoConfig, src, gsrc) -> tuple[int, int, int]:
    """Pass 1: frames (and ground truth) into chunk folders, a chunk at a time; (T, H, W)."""
    from .rundir import ChunkWriter

    c = cfg.video.chunk_frames
    fw = ChunkWriter(tmp / "frames", c)
    gw = ChunkWriter(tmp / "gt", c) if gsrc is not None else None
    t = 0
    for block in src.chunks(c):
        fw.append(frames=block)
        if gw is not None:
            gw.append(gt=gsrc.read(t, block.shape[1:3], len(block)))
        t += len(block)
    if gsrc is not None:
        gsrc.check_count(t)
    fw.close()
    if gw is not None:
        gw.close()
    assert src.shape is not None
    return t, int(src.shape[0]), int(src.shape[1])


_TASK_CACHE: dict = {}


def _cached(slot: str, key, make):
    """One object per ``slot`` ("net", "raft") in a worker, made again when its key changes."""
    have = _TASK_CACHE.get(slot)
    if have is None or have[0] != key:
        have = _TASK_CACHE[slot] = (key, make())
    return have[1]


def chunk_task(run_tmp: str, i: int, spec: dict) -> dict:
    """One chunk of init's pass 2 (a top-level function: it runs in engine workers): SLIC
    superpixels (ids local to each frame), the flows of the pairs starting in the chunk with
    their occlusion masks, and the network's labels. Reads only the run directory."""
    from . import model as vmodel
    from .flow import load_raft, occlusion, pair_flows
    from .rundir import ChunkedArray

    _set_threads(spec["threads"])
    frames = ChunkedArray(Path(run_tmp) / "frames", "frames")
    c, t = frames.chunk, len(frames)
    s, e = i * c, min((i + 1) * c, t)
    block = frames[s:min(e + 1, t)]  # and the next chunk's first frame, for the last pair
    own = block[:e - s]
    h, w = own.shape[1:3]
    sp = superpixels(own, n_segments=max(2, round(h * w / spec["superpixel_px"])))
    raft = _cached("raft", spec["flow_weights"], lambda: load_raft(spec["flow_weights"])) \
        if spec["flow"] == "raft" else None
    fwd, bwd = pair_flows(block, spec["flow"], raft)
    occ_f = np.stack([occlusion(fwd[k], bwd[k]) for k in range(len(fwd))]) if len(fwd) else np.zeros((0, h, w), bool)
    occ_b = np.stack([occlusion(bwd[k], fwd[k]) for k in range(len(fwd))]) if len(fwd) else np.zeros((0, h, w), bool)
    net = _cached("net", _model_key(Path(spec["model"])), lambda: vmodel.load(spec["model"], what="model")[0])
    pred = np.concatenate([vmodel.predict(net, own[a - s:b - s], features=False).argmax(1).astype(np.uint8)
                           for a, b in _blocks_from(s, e, 8)])
    return {"sp": sp, "fwd": fwd.astype(np.float16), "bwd": bwd.astype(np.float16), "occ_fwd": occ_f,
            "occ_bwd": occ_b, "pred": pred}


def _blocks_from(s: int, e: int, step: int):
    return [(a, min(a + step, e)) for a in range(s, e, step)]


def _write_derived(tmp: Path, cfg: vconfig.VideoConfig, n_classes: int, *, engine: str,
                   workers: int | None) -> tuple[np.ndarray | None, dict]:
    """Pass 2: unit maps, flows, the network's labels (round 0) and the gold pool, a chunk per task
    of the engine. Returns round 0's confusion matrix (None without ground truth) and the manual
    labeling's reference (``clicks``, ``miou``)."""
    from ..engine import make_engine
    from .rundir import ChunkedArray, ChunkWriter

    v = cfg.video
    frames = ChunkedArray(tmp / "frames", "frames")
    gt = ChunkedArray(tmp / "gt", "gt") if (tmp / "gt").is_dir() else None
    t, h, w = frames.shape[:3]
    c = v.chunk_frames
    frame_like = v.granularity == "frame" or v.method == "keyframe"
    ukind = v.granularity if v.method != "keyframe" else "frame"
    spec = {"threads": v.threads, "superpixel_px": v.superpixel_px, "flow": v.flow, "flow_weights": v.flow_weights,
            "model": str(tmp / "model" / "base.pt")}
    uw, fw = ChunkWriter(tmp / "units", c), ChunkWriter(tmp / "flows", c)
    pw = ChunkWriter(tmp / "journal-init" / "pred", c)
    sp_off = u_off = 0
    sp_frames: list[np.ndarray] = []
    u_frames: list[np.ndarray] = []
    conf = np.zeros((n_classes, n_classes), np.int64) if gt is not None else None
    sp_hist: list[np.ndarray] = []
    reg_hist: list[np.ndarray] = []
    n_chunks = frames.n_chunks
    with make_engine(engine, 1 if workers is None and engine == "local" else workers) as eng:
        for i, res in enumerate(eng.map(chunk_task, [(str(tmp), i, spec) for i in range(n_chunks)])):
            s = i * c
            n = len(res["sp"])
            sp, sp_table = unit_maps("superpixel", shape=(n, h, w), superpixel_map=res["sp"], offset=sp_off,
                                     first_frame=s)
            if ukind == "superpixel":  # the same numbering
                um, utable = sp, sp_table
            else:
                um, utable = unit_maps(ukind, shape=(n, h, w), patch=v.patch, superpixel_map=res["sp"],
                                       offset=u_off, first_frame=s)
            regions = sp if frame_like else um
            uw.append(superpixels=sp, units=um, regions=regions)
            if len(res["fwd"]):
                fw.append(fwd=res["fwd"], bwd=res["bwd"], occ_fwd=res["occ_fwd"], occ_bwd=res["occ_bwd"])
            pw.append(labels=res["pred"])
            if gt is not None and conf is not None:
                g = gt[s:s + n]
                conf += confusion(res["pred"], g, n_classes)
                sp_hist.append(class_hist(sp, g, sp_off, len(sp_table), n_classes))
                if not frame_like:
                    reg_hist.append(class_hist(um, g, u_off, len(utable), n_classes))
            sp_frames.append(sp_table["frame"].to_numpy())
            u_frames.append(utable["frame"].to_numpy())
            sp_off += len(sp_table)
            u_off += len(utable)
    uw.close()
    fw.close({"fwd": ((h, w, 2), "float16"), "bwd": ((h, w, 2), "float16"), "occ_fwd": ((h, w), "bool"),
              "occ_bwd": ((h, w), "bool")})
    pw.close()
    sp_frame, unit_frame = np.concatenate(sp_frames), np.concatenate(u_frames)
    save_npz(tmp / "units" / "index.npz", unit_frame=unit_frame, sp_frame=sp_frame)
    manual: dict = {"clicks": int(sp_off), "miou": None}
    rng = np.random.default_rng([cfg.campaign.seed, 0])
    if gt is not None:
        sph = np.concatenate(sp_hist)
        manual["miou"] = _manual_miou(ChunkedArray(tmp / "units", "superpixels"), gt, sph.argmax(1), n_classes)
        hist = sph if frame_like else np.concatenate(reg_hist)
        n_regions = len(hist)
        truth, _ = truth_from_hist(hist, v.mixed_below)
        rframe = sp_frame if frame_like else unit_frame
        pick = np.sort(rng.choice(n_regions, size=min(GOLD_POOL, n_regions), replace=False))
        write_parquet(tmp / "golds.parquet", pd.DataFrame({"region": pick, "frame": rframe[pick],
                                                           "truth": truth[pick], "used": 0}))
    return conf, manual


def _manual_miou(sp, gt, majority: np.ndarray, n_classes: int) -> float:
    """mIoU of labeling every superpixel with its majority class (full manual labeling)."""
    conf = np.zeros((n_classes, n_classes), np.int64)
    for s, e in _blocks(len(sp), sp.chunk if hasattr(sp, "chunk") else len(sp)):
        conf += confusion(majority[sp[s:e]].astype(np.uint8), gt[s:e], n_classes)
    return miou_of(conf)


def _write_campaign(tmp: Path, cfg: vconfig.VideoConfig, classes: list[str], names: list[str],
                    shape: tuple[int, ...], sources: dict, crowd: dict, manual: dict | None = None) -> VideoRun:
    from .. import __version__
    from ..campaign.init import campaign_id

    atomic_write_text(tmp / "config.json", cfg.to_json() + "\n")
    vr = VideoRun(tmp)
    vr.write_campaign({
        "kind": KIND, "version": __version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "classes": classes, "frame_names": names, "frames": int(shape[0]), "height": int(shape[1]),
        "width": int(shape[2]), "sources": sources, "seed": cfg.campaign.seed, "crowd": crowd,
        "campaign_id": campaign_id(crowd, cfg.campaign.seed), **({"manual": manual} if manual else {})})
    return vr.require()


def sample_model_path() -> Path:
    from importlib.resources import files

    return Path(str(files("crowdprop.data") / "video_sample" / "model.pt"))


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(int(n))


# -- metrics ---------------------------------------------------------------------------------------
def manual_reference(vr: VideoRun) -> tuple[int, float | None]:
    """Clicks of labeling every frame by hand (one per superpixel) and that labeling's mIoU."""
    m = vr.campaign.get("manual")
    if isinstance(m, dict):
        return int(m["clicks"]), m["miou"]
    u = vr.units()  # a run directory of the first version
    sp = u["superpixels"]
    n = int(sp.max()) + 1
    gt = vr.gt()
    if gt is None:
        return n, None
    return n, miou(majority_labels(sp, gt, n, len(vr.classes)), gt, len(vr.classes))


def _metrics(vr: VideoRun, r: int, conf: np.ndarray | None, answers: pd.DataFrame, assignments: pd.DataFrame,
             timing: dict, conf_model: np.ndarray | None = None) -> dict:
    """A round's metrics; ``conf``, ``conf_model``: confusion matrices (:func:`confusion`) of the
    final labels and the network's own against ground truth (None without it)."""
    prev = vr.metrics()[-1] if r > 0 else {"clicks": 0, "clicks_all": 0, "cents": 0, "hits": 0, "rejected": 0}
    lab = answers.loc[(answers["kind"] == "label") & answers["approved"].astype(bool)] if len(answers) else answers
    clicks = int(prev["clicks"]) + int(len(lab))
    clicks_all = int(prev["clicks_all"]) + int(len(answers))
    spent = int(prev["cents"]) + (int(assignments["reward_cents"].sum() + assignments["fee_cents"].sum())
                                  if len(assignments) else 0)
    total, m_manual = manual_reference(vr)
    out = {"round": r, "clicks": clicks, "clicks_all": clicks_all, "clicks_share": clicks / total,
           "manual_clicks": total, "cents": spent,
           "hits": int(prev["hits"]) + int(len(assignments)),
           "rejected": int(prev["rejected"]) + (int((~assignments["approved"].astype(bool)).sum())
                                                if len(assignments) else 0),
           "miou": miou_of(conf) if conf is not None else None,
           "miou_model": (miou_of(conf_model) if conf_model is not None else
                          (miou_of(conf) if conf is not None and r == 0 else None)),
           "miou_manual": m_manual, "seconds": timing}
    return out


# -- the round loop --------------------------------------------------------------------------------
def human_lut(n_regions: int, answers: pd.DataFrame) -> np.ndarray:
    """int64 (n_regions,): the class people gave each region, -1 where none. Approved answers to a
    region are votes ("mixed" one of them); an outright winning class labels it, a tie or "mixed"
    does not."""
    lut = np.full(int(n_regions), -1, np.int64)
    if len(answers):
        a = answers.loc[(answers["kind"] == "label") & answers["approved"].astype(bool)]
        votes = a.groupby(["region", "answer"]).size().rename("n").reset_index()
        votes = votes.sort_values(["region", "n"], ascending=[True, False], kind="stable")
        top = votes.groupby("region").head(2)
        first = top.groupby("region").nth(0).set_index("region")
        second = top.groupby("region").nth(1).set_index("region")["n"].reindex(first.index).fillna(0)
        win = first.loc[(first["n"] > second) & (first["answer"] >= 0)]
        lut[win.index.to_numpy(np.int64)] = win["answer"].to_numpy(np.int64)
    return lut


def human_labels(regions: np.ndarray, answers: pd.DataFrame) -> np.ndarray:
    """int (T, H, W): the class people gave each pixel's region, -1 where none (:func:`human_lut`)."""
    return human_lut(int(regions.max()) + 1, answers)[regions]


def _n_regions(u: dict, v) -> int:
    frame_like = v.granularity == "frame" or v.method == "keyframe"
    return len(u["sp_frame"]) if frame_like else len(u["unit_frame"])


def unit_stats(net, frames, units, n_units: int, measure: str, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's mean pixel uncertainty and mean backbone feature, inference ``batch`` frames at a
    time (units are numbered frame by frame, so a batch's units are a contiguous range)."""
    from . import model as vmodel

    unc = np.zeros(n_units)
    emb: np.ndarray | None = None
    for s, e in _blocks(len(frames), batch):
        probs, feats = vmodel.predict(net, frames[s:e], batch=batch)
        um = units[s:e]
        lo, hi = int(um.min()), int(um.max()) + 1
        loc = um - lo
        unc[lo:hi] = pooled(loc, pixel_uncertainty(probs, measure), hi - lo)
        f = pooled(loc, feats, hi - lo)
        if emb is None:
            emb = np.zeros((n_units, f.shape[1]))
        emb[lo:hi] = f
        del probs, feats
    assert emb is not None
    return unc, emb


def round_task(run_dir: str, model_key: tuple, i: int, spec: dict) -> dict:
    """One chunk of a round's inference (a top-level function: it runs in engine workers): the
    chunk's units' uncertainty and embeddings (``spec["what"] == "stats"``) or the network's
    labels (``"labels"``), in the same 8-frame batches as in process. ``model_key``: the
    network's checkpoint path and its modification time (the cache key)."""
    from . import model as vmodel
    from .rundir import ChunkedArray

    _set_threads(spec["threads"])
    frames = ChunkedArray(Path(run_dir) / "frames", "frames")
    s, e = i * frames.chunk, min((i + 1) * frames.chunk, len(frames))
    net = _cached("net", model_key, lambda: vmodel.load(model_key[0], what="model")[0])
    own = frames[s:e]
    if spec["what"] == "labels":
        return {"labels": np.concatenate([vmodel.predict(net, own[a:b], features=False).argmax(1).astype(np.uint8)
                                          for a, b in _blocks(len(own), 8)])}
    um = ChunkedArray(Path(run_dir) / "units", "units")[s:e]
    lo = int(um.min())
    unc, emb = unit_stats(net, own, um - lo, int(um.max()) + 1 - lo, spec["measure"])
    return {"lo": lo, "unc": unc, "emb": emb}


def _on_engine(engine, frames) -> bool:
    """Whether a round's inference goes to ``engine``'s workers: a Ray or multi-process engine,
    and a run directory with chunk folders."""
    from ..engine import Engine
    from .rundir import ChunkedArray

    return engine is not None and type(engine) is not Engine and isinstance(frames, ChunkedArray)


def _model_key(path: Path) -> tuple:
    return (str(path), Path(path).stat().st_mtime_ns)


def _unit_stats_on(engine, vr: VideoRun, model_path: Path, n_units: int, measure: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unit_stats` a chunk per engine task."""
    frames = vr.frame_store()
    spec = {"threads": vr.config.video.threads, "what": "stats", "measure": measure}
    unc = np.zeros(n_units)
    emb: np.ndarray | None = None
    key = _model_key(model_path)
    for res in engine.map(round_task, [(str(vr.path), key, i, spec) for i in range(frames.n_chunks)]):
        lo, n = int(res["lo"]), len(res["unc"])
        unc[lo:lo + n] = res["unc"]
        if emb is None:
            emb = np.zeros((n_units, res["emb"].shape[1]))
        emb[lo:lo + n] = res["emb"]
    assert emb is not None
    return unc, emb


class _InOrder:
    """Engine results (``{"labels": ...}`` a chunk each, in order) read as ``a[s:e]`` in increasing
    blocks that do not cross a chunk."""

    def __init__(self, results):
        self.it = iter(results)
        self.start = 0
        self.cur = np.zeros(0, np.uint8)

    def __getitem__(self, sl: slice) -> np.ndarray:
        while sl.start >= self.start + len(self.cur):
            self.start += len(self.cur)
            self.cur = next(self.it)["labels"]
        return self.cur[sl.start - self.start:sl.stop - self.start]


def region_truths(regions, gt, n_regions: int, n_classes: int, mixed_below: float) -> np.ndarray:
    """A careful worker's answer to every region, from ground truth, a block of frames at a time."""
    hist = np.zeros((n_regions, n_classes), np.int64)
    step = getattr(regions, "chunk", 64)
    for s, e in _blocks(len(regions), step):
        rm = regions[s:e]
        lo, hi = int(rm.min()), int(rm.max()) + 1
        hist[lo:hi] += class_hist(rm, gt[s:e], lo, hi - lo, n_classes)
    return truth_from_hist(hist, mixed_below)[0]


def plan_round(vr: VideoRun, r: int, net, frames, asked_units: np.ndarray, *, engine=None,
               model_path: Path | None = None) -> pd.DataFrame:
    """This round's questions: units chosen by the configured method, expanded to regions
    (the network's inference on ``engine``'s workers when it has any, ``net`` being the
    checkpoint at ``model_path``)."""
    from .select import keyframes, select

    cfg = vr.config
    v = cfg.video
    u = vr.unit_store()
    units, regions = u["units"], u["regions"]
    n_units = len(u["unit_frame"])
    unit_frame = u["unit_frame"]
    frame_like = v.granularity == "frame" or v.method == "keyframe"
    per_unit = len(u["sp_frame"]) / len(frames) if frame_like else 1.0
    per_unit *= cfg.crowd.assignments_per_hit  # every assignment's answer is a click
    b = max(1, int(v.clicks_per_round // per_unit))
    cand = np.ones(n_units, bool)
    cand[asked_units] = False
    rng = np.random.default_rng([cfg.campaign.seed, r, 1])
    if v.method == "keyframe":
        chosen = keyframes(len(frames), ~cand, b)
    else:
        if _on_engine(engine, frames) and model_path is not None:
            unc, emb = _unit_stats_on(engine, vr, model_path, n_units, v.uncertainty)
        else:
            unc, emb = unit_stats(net, frames, units, n_units, v.uncertainty)
        chosen = select(unc, emb, b, rng, method=v.method, candidates=cand)
        del emb
    gt = vr.gt_store()
    k = len(vr.classes)
    if frame_like:
        reg = np.flatnonzero(np.isin(u["sp_frame"], chosen))
        reg_frame = u["sp_frame"][reg]
        reg_unit = reg_frame
    else:
        reg, reg_frame, reg_unit = chosen, unit_frame[chosen], chosen
    if gt is not None:
        truth = region_truths(regions, gt, _n_regions(u, v), k, v.mixed_below)[reg]
    else:
        truth = np.full(len(reg), UNKNOWN)
    return pd.DataFrame({"question": np.arange(len(reg), dtype=np.int64), "unit": reg_unit.astype(np.int64),
                         "region": reg.astype(np.int64), "frame": reg_frame.astype(np.int64),
                         "truth": truth.astype(np.int64)})


def _region_choices(net, frames, regions, n_regions: int, batch: int = 8) -> np.ndarray:
    """:func:`crowdprop.video.hits.region_choices` a batch of frames at a time."""
    from . import model as vmodel
    from .hits import region_choices

    out: np.ndarray | None = None
    for s, e in _blocks(len(frames), batch):
        rm = regions[s:e]
        lo, hi = int(rm.min()), int(rm.max()) + 1
        ch = region_choices(vmodel.predict(net, frames[s:e], features=False, batch=batch), rm - lo, hi - lo)
        if out is None:
            out = np.zeros((n_regions, ch.shape[1]), np.int64)
        out[lo:hi] = ch
    assert out is not None
    return out


def _write_predictions(net, frames, regions, lut: np.ndarray, gt, folder: Path, n_classes: int, *,
                       model_pred=None, batch: int = 8) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The network's labels (or ``model_pred``'s, keyframe propagation) and the final ones (people's
    labels over them) of every frame into ``folder/model_pred`` and ``folder/pred``, a batch of
    frames at a time; their confusion matrices against ``gt`` (None without)."""
    from . import model as vmodel
    from .rundir import ChunkWriter

    chunk = getattr(frames, "chunk", None) or vr_chunk_default()
    for name in ("pred", "model_pred"):
        shutil.rmtree(folder / name, ignore_errors=True)
    pw, mw = ChunkWriter(folder / "pred", chunk), ChunkWriter(folder / "model_pred", chunk)
    conf = np.zeros((n_classes, n_classes), np.int64) if gt is not None else None
    conf_m = np.zeros((n_classes, n_classes), np.int64) if gt is not None else None
    for s, e in _blocks(len(frames), batch):
        if model_pred is None:
            mp = vmodel.predict(net, frames[s:e], features=False, batch=batch).argmax(1).astype(np.uint8)
        else:
            mp = np.asarray(model_pred[s:e], np.uint8)
        hum = lut[regions[s:e]]
        final = np.where(hum >= 0, hum, mp).astype(np.uint8)
        mw.append(labels=mp)
        pw.append(labels=final)
        if gt is not None and conf is not None and conf_m is not None:
            g = gt[s:e]
            conf += confusion(final, g, n_classes)
            conf_m += confusion(mp, g, n_classes)
    pw.close()
    mw.close()
    return conf, conf_m


def vr_chunk_default() -> int:
    return vconfig.VideoSection().chunk_frames


def run_round(vr: VideoRun, r: int, *, on_checkpoint=None, crowd=None, engine=None) -> dict:
    """Do (or finish) round ``r`` and commit it; returns its metrics. ``crowd``: a
    :class:`crowdprop.video.hits.VideoCrowd` that asks the questions as HITs (None: the
    in-process simulated workers). Frames, unit maps, flows and label maps are read from the
    run directory's chunk folders as they are needed (:class:`crowdprop.video.rundir.ChunkedArray`).
    ``engine`` (:mod:`crowdprop.engine`): a Ray or multi-process engine runs the round's inference
    (selection's and the final labels) a chunk per task; fine-tuning stays here."""
    import torch

    from . import model as vmodel
    from .finetune import RegionLabels, finetune
    from .flow import propagate

    cfg = vr.config
    v = cfg.video
    _set_threads(v.threads)
    t0 = time.perf_counter()
    frames = vr.frame_store()
    u = vr.unit_store()
    regions = u["regions"]
    n_regions = _n_regions(u, v)
    jdir = vr.journal_dir(r)
    jdir.mkdir(parents=True, exist_ok=True)
    prev_answers = vr.table("answers")
    net, ck = vmodel.load(vr.model_path(r - 1), what="model")  # selection uses the latest network
    timing: dict[str, float] = {}
    if not (jdir / "crowd.done").exists():
        if (jdir / "plan.parquet").exists():
            plan = read_parquet(jdir / "plan.parquet")
        else:
            asked = (prev_answers.loc[prev_answers["kind"] == "label", "unit"].to_numpy(np.int64)
                     if len(prev_answers) else np.zeros(0, np.int64))
            plan = plan_round(vr, r, net, frames, np.unique(asked), engine=engine, model_path=vr.model_path(r - 1))
            write_parquet(jdir / "plan.parquet", plan)
        timing["select"] = time.perf_counter() - t0
        golds = read_parquet(vr.path / "golds.parquet") if (vr.path / "golds.parquet").exists() else \
            pd.DataFrame({"region": pd.Series(dtype="int64"), "frame": pd.Series(dtype="int64"),
                          "truth": pd.Series(dtype="int64"), "used": pd.Series(dtype="int64")})
        prev_asg = vr.table("assignments")
        if len(prev_answers):  # golds used so far
            used = prev_answers.loc[prev_answers["kind"] == "gold"].groupby("region").size()
            golds["used"] = golds["region"].map(used).fillna(0).astype(np.int64)
        spent = int(vr.metrics()[-1]["cents"])
        if crowd is None:
            if vr.gt_store() is None:
                raise StateError(f"{vr.path}: simulated workers answer from ground truth, and this run has none "
                                 "(init with --gt, or --crowd mturk)")
            workers = simulated_workers(cfg.simulation, cfg.campaign.seed)
            answers, assignments, _ = run_questions(plan, golds, workers, cfg, round_=r,
                                                    rng=np.random.default_rng([cfg.campaign.seed, r, 2]),
                                                    spent_cents=spent, history=prev_asg if len(prev_asg) else None,
                                                    n_classes=len(vr.classes))
        else:
            from .hits import RoundHits

            choices = _region_choices(net, frames, regions, n_regions)
            answers, assignments = RoundHits(vr, r, crowd, spent_cents=spent,
                                             history=prev_asg if len(prev_asg) else None,
                                             choices=choices).run(plan, golds)
        if len(answers):
            answers = answers.merge(plan[["question", "unit"]], on="question", how="left")
            answers["unit"] = answers["unit"].fillna(-1).astype(np.int64)
        else:
            answers = pd.DataFrame({c: pd.Series(dtype="int64") for c in ["question", "region", "unit", "frame",
                                                                          "answer", "truth", "hit", "round"]})
            answers["kind"] = pd.Series(dtype=str)
            answers["approved"] = pd.Series(dtype=bool)
            answers["worker"] = pd.Series(dtype=str)
        timing["crowd"] = time.perf_counter() - t0 - timing["select"]  # asking (and, on MTurk, the model's choices)
        write_parquet(jdir / "answers.parquet", answers)
        write_parquet(jdir / "assignments.parquet", assignments)
        atomic_write_text(jdir / "crowd.done", "")
    answers = read_parquet(jdir / "answers.parquet")
    assignments = read_parquet(jdir / "assignments.parquet")
    all_answers = pd.concat([a for a in (prev_answers, answers) if len(a)], ignore_index=True) \
        if len(prev_answers) or len(answers) else answers
    lut = human_lut(n_regions, all_answers)
    gt = vr.gt_store()
    k = len(vr.classes)
    t1 = time.perf_counter()
    files: dict[str, object] = {}
    if v.method == "keyframe":  # propagation runs over whole-video arrays (not streamed)
        fl = vr.flows()
        human = lut[np.asarray(regions)]
        base = vr.pred(0)
        prop, reached = propagate(human, human >= 0, fl["fwd"], fl["bwd"], fl["occ_fwd"], fl["occ_bwd"])
        del fl, human
        model_pred = np.where(reached, prop, base).astype(np.uint8)
        timing["propagate"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        conf, conf_m = _write_predictions(None, frames, regions, lut, gt, jdir, k, model_pred=model_pred)
    else:
        if v.finetune_from == "base":
            net, ck = vmodel.load(vr.model_path(0), what="model")
        state = None
        ckp = jdir / "ft.pt"
        if ckp.exists():
            state = torch.load(ckp, map_location="cpu", weights_only=True)

        def save_ck(step, st):
            vmodel.save(st, ckp)
            if on_checkpoint is not None:
                on_checkpoint(step, st)

        fl = vr.flow_store()
        rframe = u["sp_frame"] if (v.granularity == "frame" or v.method == "keyframe") else u["unit_frame"]
        finetune(net, frames, RegionLabels(lut, regions, rframe), fl["fwd"], fl["occ_fwd"], steps=v.finetune_steps,
                 lr=v.finetune_lr, lam=v.consistency, pairs=v.finetune_pairs, seed=cfg.campaign.seed, round_=r,
                 state=state, balanced=v.balanced, anchor=v.anchor,
                 checkpoint_every=v.checkpoint_every, on_checkpoint=save_ck)
        timing["finetune"] = time.perf_counter() - t1
        mp = jdir / "model.pt"
        vmodel.save(vmodel.checkpoint(net, ck["arch"], ck["classes"], ck.get("width", 32)), mp)
        files["model.pt"] = mp
        t2 = time.perf_counter()
        if _on_engine(engine, frames):
            spec = {"threads": v.threads, "what": "labels"}
            labels = _InOrder(engine.map(round_task, [(str(vr.path), _model_key(mp), i, spec)
                                                      for i in range(frames.n_chunks)]))
            conf, conf_m = _write_predictions(None, frames, regions, lut, gt, jdir, k, model_pred=labels)
        else:
            conf, conf_m = _write_predictions(net, frames, regions, lut, gt, jdir, k)
        timing["inference"] = time.perf_counter() - t2
    timing["round"] = time.perf_counter() - t0
    if (jdir / "hits.parquet").exists():  # the HITs of an MTurk round, with their HIT ids
        files["hits.parquet"] = read_parquet(jdir / "hits.parquet")
    files.update({"answers.parquet": answers, "assignments.parquet": assignments,
                  "pred": jdir / "pred", "model_pred": jdir / "model_pred"})
    metrics = _metrics(vr, r, conf, answers, assignments, timing, conf_m)
    files["metrics.json"] = metrics
    vr.commit_round(r, files)
    shutil.rmtree(jdir, ignore_errors=True)
    return metrics


def run(run_dir, *, rounds: int | None = None, on_checkpoint=None, progress=None, crowd=None,
        engine: str = "local", workers: int | None = None) -> list[dict]:
    """Continue a video campaign up to ``[video] rounds`` (or ``rounds`` more); returns the new
    rounds' metrics.

    ``crowd``: a :class:`crowdprop.video.hits.VideoCrowd` (left open). None: the run's own crowd,
    the in-process simulated workers, or for ``mturk-local`` a local endpoint started here and
    stopped at the end; an ``mturk`` run needs one (:func:`crowdprop.video.hits.connect`).
    ``engine``, ``workers``: where the rounds' inference runs (:func:`run_round`; ``local`` with
    one worker: in this process)."""
    vr = VideoRun(run_dir).require()
    out = []
    with vr.lock():
        own = None
        kind = vr.crowd_kind()
        if crowd is None and kind == "mturk-local":
            from .hits import local_crowd

            crowd = own = local_crowd(vr)
        elif crowd is None and kind == "mturk":
            raise StateError(f"{vr.path}: its crowd is MTurk; run it with crowdprop video run (or crowdprop run), "
                             "which say where to publish")
        from ..engine import make_engine

        eng = make_engine(engine, 1 if workers is None and engine == "local" else workers)
        try:
            last = vr.rounds()[-1]
            end = vr.config.video.rounds if rounds is None else min(vr.config.video.rounds, last + rounds)
            for r in range(last + 1, end + 1):
                before = vr.metrics()[-1]["clicks_all"]
                m = run_round(vr, r, on_checkpoint=on_checkpoint, crowd=crowd, engine=eng)
                out.append(m)
                if progress:
                    progress(m)
                if m["clicks_all"] == before:
                    log.info("round %d asked nothing (budget or units used up); stopping", r)
                    break
        finally:
            eng.close()
            if own is not None:
                own.close()
    return out
