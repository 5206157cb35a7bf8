"""The video run directory and its round loop.

Layout::

    RUN_DIR/
      campaign.json        kind "video", classes, frame names, sources, seed
      config.json          every key of :class:`crowdprop.video.config.VideoConfig`
      frames.npz           uint8 (T, H, W, 3), compressed
      gt.npz               uint8 (T, H, W) ground truth (replay)
      units.npz            superpixels (global ids), units (global ids), regions (what a question covers)
      flows.npz            fwd, bwd (float16), occ_fwd, occ_bwd between neighbouring frames
      model/base.pt        the network the campaign started from
      golds.parquet        gold pool: region, frame, truth
      state/round-00000/   the start: the base network's labels (pred.npz) and metrics.json
      state/round-0000k/   answers.parquet, assignments.parquet, metrics.json, pred.npz
                           (the final label maps: human labels over the network's), model.pt,
                           hits.parquet (MTurk crowds: every HIT's questions and HIT id)
      journal/round-0000k/ the round in progress: plan.parquet (questions), hits.parquet and
                           events.jsonl (MTurk crowds, :mod:`crowdprop.video.hits`), answers and
                           assignments once the crowd is done (crowd.done), ft.pt (the latest
                           fine-tuning checkpoint)
      hit_images/          the worker pages' pictures (MTurk crowds without s3_bucket)

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
from .units import majority_labels, pixel_uncertainty, pooled, superpixels, unit_maps, unit_truth

log = logging.getLogger(__name__)

GOLD_POOL = 100


def miou(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> float:
    """Mean IoU over the classes present in ``gt`` or ``pred``, pixels of the whole video pooled."""
    idx = gt.astype(np.int64).ravel() * n_classes + pred.astype(np.int64).ravel()
    conf = np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    ok = union > 0
    return float((inter[ok] / union[ok]).mean()) if ok.any() else 1.0


# -- init ------------------------------------------------------------------------------------------
def init_video(run_dir: str | os.PathLike, *, frames: str | os.PathLike, labels: str | os.PathLike,
               model: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
               config: str | os.PathLike | None = None, seed: int | None = None, overrides: dict | None = None,
               crowd: dict | None = None) -> VideoRun:
    """Check every input, then build the run directory in a temporary folder next to it and
    rename it into place (:func:`crowdprop.staging.staged`: a failed init leaves nothing).
    ``crowd``: ``{"kind": "simulated" | "mturk-local" | "mturk", ...}`` (default simulated; all
    but ``mturk`` need ``gt``)."""
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
    vid, names = inputs.read_frames(frames)
    classes = inputs.read_labels(labels)
    model_path = Path(model) if model else sample_model_path()
    net, ck = vmodel.load(model_path)
    inputs.check_model_classes(labels, classes, list(ck["classes"]), model_path)
    gt_arr = inputs.read_gt(gt, vid.shape[:3], len(classes), labels) if gt else None
    crowd = dict(crowd or {"kind": "simulated"})
    if crowd.get("kind") not in CROWDS:
        raise InputError("command line", None, "--crowd", f"must be one of {', '.join(CROWDS)}")
    if crowd["kind"] != "mturk" and gt_arr is None:
        raise InputError(frames, None, "--gt", f"a '{crowd['kind']}' crowd answers from ground truth: pass --gt")
    sources = {"frames": str(frames), "labels": str(labels), "model": str(model_path), "gt": str(gt) if gt else None}
    with staged(run_dir) as tmp:
        _write_inputs(tmp, cfg, vid, gt_arr, model_path, len(classes))
        vr = _write_campaign(tmp, cfg, classes, names, vid.shape, sources, crowd)
        _set_threads(cfg.video.threads)
        pred = vmodel.predict(net, vid, features=False).argmax(1).astype(np.uint8)
        vr.commit_round(0, {"pred.npz": {"labels": pred}, "model_pred.npz": {"labels": pred},
                            "metrics.json": _metrics(vr, 0, pred, pd.DataFrame(), pd.DataFrame(), {})})
    return VideoRun(run_dir).require()


def _write_inputs(tmp: Path, cfg: vconfig.VideoConfig, vid: np.ndarray, gt_arr: np.ndarray | None,
                  model_path: Path, n_classes: int) -> None:
    """frames, ground truth, units, flows, the base network and the gold pool of a new run directory."""
    from .flow import clip_flows

    v = cfg.video
    save_npz(tmp / "frames.npz", frames=vid)
    if gt_arr is not None:
        save_npz(tmp / "gt.npz", gt=gt_arr)
    sp_local = superpixels(vid, n_segments=max(2, round(vid.shape[1] * vid.shape[2] / v.superpixel_px)))
    sp, sp_table = unit_maps("superpixel", shape=vid.shape[:3], superpixel_map=sp_local)
    um, utable = unit_maps(v.granularity if v.method != "keyframe" else "frame", shape=vid.shape[:3],
                           patch=v.patch, superpixel_map=sp_local)
    regions = sp if (v.granularity == "frame" or v.method == "keyframe") else um
    save_npz(tmp / "units.npz", superpixels=sp, units=um, regions=regions,
              unit_frame=utable["frame"].to_numpy(), sp_frame=sp_table["frame"].to_numpy())
    fwd, bwd, occ_f, occ_b = clip_flows(vid)
    save_npz(tmp / "flows.npz", fwd=fwd.astype(np.float16), bwd=bwd.astype(np.float16), occ_fwd=occ_f,
              occ_bwd=occ_b)
    (tmp / "model").mkdir()
    shutil.copyfile(model_path, tmp / "model" / "base.pt")
    rng = np.random.default_rng([cfg.campaign.seed, 0])
    if gt_arr is not None:
        n_regions = int(regions.max()) + 1
        truth, _ = unit_truth(regions, gt_arr, n_regions, n_classes, mixed_below=v.mixed_below)
        rframe = (sp_table["frame"].to_numpy() if regions is sp else utable["frame"].to_numpy())
        pick = np.sort(rng.choice(n_regions, size=min(GOLD_POOL, n_regions), replace=False))
        write_parquet(tmp / "golds.parquet", pd.DataFrame({"region": pick, "frame": rframe[pick],
                                                           "truth": truth[pick], "used": 0}))


def _write_campaign(tmp: Path, cfg: vconfig.VideoConfig, classes: list[str], names: list[str],
                    shape: tuple[int, ...], sources: dict, crowd: dict) -> VideoRun:
    from .. import __version__
    from ..campaign.init import campaign_id

    atomic_write_text(tmp / "config.json", cfg.to_json() + "\n")
    vr = VideoRun(tmp)
    vr.write_campaign({
        "kind": KIND, "version": __version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "classes": classes, "frame_names": names, "frames": int(shape[0]), "height": int(shape[1]),
        "width": int(shape[2]), "sources": sources, "seed": cfg.campaign.seed, "crowd": crowd,
        "campaign_id": campaign_id(crowd, cfg.campaign.seed)})
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
    u = vr.units()
    sp = u["superpixels"]
    n = int(sp.max()) + 1
    gt = vr.gt()
    if gt is None:
        return n, None
    return n, miou(majority_labels(sp, gt, n, len(vr.classes)), gt, len(vr.classes))


def _metrics(vr: VideoRun, r: int, final: np.ndarray, answers: pd.DataFrame, assignments: pd.DataFrame,
             timing: dict, model_pred: np.ndarray | None = None) -> dict:
    prev = vr.metrics()[-1] if r > 0 else {"clicks": 0, "clicks_all": 0, "cents": 0, "hits": 0, "rejected": 0}
    lab = answers.loc[(answers["kind"] == "label") & answers["approved"].astype(bool)] if len(answers) else answers
    clicks = int(prev["clicks"]) + int(len(lab))
    clicks_all = int(prev["clicks_all"]) + int(len(answers))
    spent = int(prev["cents"]) + (int(assignments["reward_cents"].sum() + assignments["fee_cents"].sum())
                                  if len(assignments) else 0)
    total, m_manual = manual_reference(vr)
    gt = vr.gt()
    k = len(vr.classes)
    out = {"round": r, "clicks": clicks, "clicks_all": clicks_all, "clicks_share": clicks / total,
           "manual_clicks": total, "cents": spent,
           "hits": int(prev["hits"]) + int(len(assignments)),
           "rejected": int(prev["rejected"]) + (int((~assignments["approved"].astype(bool)).sum())
                                                if len(assignments) else 0),
           "miou": miou(final, gt, k) if gt is not None else None,
           "miou_model": (miou(model_pred, gt, k) if gt is not None and model_pred is not None else
                          (miou(final, gt, k) if gt is not None and r == 0 else None)),
           "miou_manual": m_manual, "seconds": timing}
    return out


# -- the round loop --------------------------------------------------------------------------------
def human_labels(regions: np.ndarray, answers: pd.DataFrame) -> np.ndarray:
    """int (T, H, W): the class people gave each pixel's region, -1 where none. Approved answers to
    a region are votes ("mixed" one of them); an outright winning class labels it, a tie or
    "mixed" does not."""
    lut = np.full(int(regions.max()) + 1, -1, np.int64)
    if len(answers):
        a = answers.loc[(answers["kind"] == "label") & answers["approved"].astype(bool)]
        votes = a.groupby(["region", "answer"]).size().rename("n").reset_index()
        votes = votes.sort_values(["region", "n"], ascending=[True, False], kind="stable")
        top = votes.groupby("region").head(2)
        first = top.groupby("region").nth(0).set_index("region")
        second = top.groupby("region").nth(1).set_index("region")["n"].reindex(first.index).fillna(0)
        win = first.loc[(first["n"] > second) & (first["answer"] >= 0)]
        lut[win.index.to_numpy(np.int64)] = win["answer"].to_numpy(np.int64)
    return lut[regions]


def plan_round(vr: VideoRun, r: int, net, frames: np.ndarray, asked_units: np.ndarray) -> pd.DataFrame:
    """This round's questions: units chosen by the configured method, expanded to regions."""
    from . import model as vmodel
    from .select import keyframes, select

    cfg = vr.config
    v = cfg.video
    u = vr.units()
    units, regions, sp = u["units"], u["regions"], u["superpixels"]
    n_units = int(units.max()) + 1
    unit_frame = u["unit_frame"]
    frame_like = v.granularity == "frame" or v.method == "keyframe"
    per_unit = (int(sp.max()) + 1) / len(frames) if frame_like else 1.0
    per_unit *= cfg.crowd.assignments_per_hit  # every assignment's answer is a click
    b = max(1, int(v.clicks_per_round // per_unit))
    cand = np.ones(n_units, bool)
    cand[asked_units] = False
    rng = np.random.default_rng([cfg.campaign.seed, r, 1])
    if v.method == "keyframe":
        chosen = keyframes(len(frames), ~cand, b)
    else:
        probs, feats = vmodel.predict(net, frames)
        unc = pooled(units, pixel_uncertainty(probs, v.uncertainty), n_units)
        emb = pooled(units, feats, n_units)
        chosen = select(unc, emb, b, rng, method=v.method, candidates=cand)
    gt = vr.gt()
    k = len(vr.classes)
    if frame_like:
        reg = np.flatnonzero(np.isin(u["sp_frame"], chosen))
        reg_frame = u["sp_frame"][reg]
        reg_unit = reg_frame
    else:
        reg, reg_frame, reg_unit = chosen, unit_frame[chosen], chosen
    if gt is not None:
        truth_all, _ = unit_truth(regions, gt, int(regions.max()) + 1, k, mixed_below=v.mixed_below)
        truth = truth_all[reg]
    else:
        truth = np.full(len(reg), UNKNOWN)
    return pd.DataFrame({"question": np.arange(len(reg), dtype=np.int64), "unit": reg_unit.astype(np.int64),
                         "region": reg.astype(np.int64), "frame": reg_frame.astype(np.int64),
                         "truth": truth.astype(np.int64)})


def run_round(vr: VideoRun, r: int, *, on_checkpoint=None, crowd=None) -> dict:
    """Do (or finish) round ``r`` and commit it; returns its metrics. ``crowd``: a
    :class:`crowdprop.video.hits.VideoCrowd` that asks the questions as HITs (None: the
    in-process simulated workers)."""
    import torch

    from . import model as vmodel
    from .finetune import finetune
    from .flow import propagate

    cfg = vr.config
    v = cfg.video
    _set_threads(v.threads)
    t0 = time.perf_counter()
    frames = vr.frames()
    u = vr.units()
    regions = u["regions"]
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
            plan = plan_round(vr, r, net, frames, np.unique(asked))
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
            if vr.gt() is None:
                raise StateError(f"{vr.path}: simulated workers answer from ground truth, and this run has none "
                                 "(init with --gt, or --crowd mturk)")
            workers = simulated_workers(cfg.simulation, cfg.campaign.seed)
            answers, assignments, _ = run_questions(plan, golds, workers, cfg, round_=r,
                                                    rng=np.random.default_rng([cfg.campaign.seed, r, 2]),
                                                    spent_cents=spent, history=prev_asg if len(prev_asg) else None,
                                                    n_classes=len(vr.classes))
        else:
            from .hits import RoundHits, region_choices

            probs = vmodel.predict(net, frames, features=False)
            choices = region_choices(probs, regions, int(regions.max()) + 1)
            del probs
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
    human = human_labels(regions, all_answers)
    fl = vr.flows()
    t1 = time.perf_counter()
    files: dict[str, object] = {}
    if v.method == "keyframe":
        base = vr.pred(0)
        prop, reached = propagate(human, human >= 0, fl["fwd"], fl["bwd"], fl["occ_fwd"], fl["occ_bwd"])
        model_pred = np.where(reached, prop, base).astype(np.uint8)
        timing["propagate"] = time.perf_counter() - t1
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

        finetune(net, frames, human, fl["fwd"], fl["occ_fwd"], steps=v.finetune_steps, lr=v.finetune_lr,
                 lam=v.consistency, pairs=v.finetune_pairs, seed=cfg.campaign.seed, round_=r, state=state,
                 balanced=v.balanced, anchor=v.anchor,
                 checkpoint_every=v.checkpoint_every, on_checkpoint=save_ck)
        timing["finetune"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        model_pred = vmodel.predict(net, frames, features=False).argmax(1).astype(np.uint8)
        timing["inference"] = time.perf_counter() - t2
        mp = jdir / "model.pt"
        vmodel.save(vmodel.checkpoint(net, ck["arch"], ck["classes"], ck.get("width", 32)), mp)
        files["model.pt"] = mp
    final = np.where(human >= 0, human, model_pred).astype(np.uint8)
    timing["round"] = time.perf_counter() - t0
    if (jdir / "hits.parquet").exists():  # the HITs of an MTurk round, with their HIT ids
        files["hits.parquet"] = read_parquet(jdir / "hits.parquet")
    files.update({"answers.parquet": answers, "assignments.parquet": assignments,
                  "pred.npz": {"labels": final}, "model_pred.npz": {"labels": model_pred}})
    metrics = _metrics(vr, r, final, answers, assignments, timing, model_pred)
    files["metrics.json"] = metrics
    vr.commit_round(r, files)
    shutil.rmtree(jdir, ignore_errors=True)
    return metrics


def run(run_dir, *, rounds: int | None = None, on_checkpoint=None, progress=None, crowd=None) -> list[dict]:
    """Continue a video campaign up to ``[video] rounds`` (or ``rounds`` more); returns the new
    rounds' metrics.

    ``crowd``: a :class:`crowdprop.video.hits.VideoCrowd` (left open). None: the run's own crowd,
    the in-process simulated workers, or for ``mturk-local`` a local endpoint started here and
    stopped at the end; an ``mturk`` run needs one (:func:`crowdprop.video.hits.connect`)."""
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
        try:
            last = vr.rounds()[-1]
            end = vr.config.video.rounds if rounds is None else min(vr.config.video.rounds, last + rounds)
            for r in range(last + 1, end + 1):
                before = vr.metrics()[-1]["clicks_all"]
                m = run_round(vr, r, on_checkpoint=on_checkpoint, crowd=crowd)
                out.append(m)
                if progress:
                    progress(m)
                if m["clicks_all"] == before:
                    log.info("round %d asked nothing (budget or units used up); stopping", r)
                    break
        finally:
            if own is not None:
                own.close()
    return out
