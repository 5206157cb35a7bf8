"""report.html: the campaign report as one self-contained page.

The page has no external reference: the stylesheet is inline, figures and mask
thumbnails are PNG/JPEG ``data:`` URIs, there is no script. Every piece of user
data (class names, file names, worker ids, URLs) goes through jinja2's
autoescape; COCO URLs appear only as text.

Sections and where their numbers come from
------------------------------------------
summary, curves, rounds
    :func:`crowdprop.report.summary.compute_report` (``rep["total"]``, ``rep["rounds"]``).
per class (:func:`class_table`)
    Final mask labels (:func:`crowdprop.campaign.loop.load_state` and
    :func:`crowdprop.policy.controller.mask_status`) grouped by ``category_id``;
    questions = non-gold answers in usable work on the class's masks; estimated
    precision = :func:`~crowdprop.report.summary.precision_estimate` restricted to
    the class's accepted clusters and directly answered masks, computed for all classes in
    one pass (:func:`~crowdprop.report.summary.precision_estimates_by_class`).
costs (:func:`cost_breakdown`)
    spend tables (rewards, fees, bonuses); the gold share of the dollars; rejected
    (unpaid) assignments and the reward they would have earned.
workers (:func:`worker_table`)
    answers and assignments per worker; gold accuracy with its Beta credible
    interval (:func:`crowdprop.quality.beta_interval`) from gold answers checked
    against the questions' ``gold_label``; skill = one-coin Dawid-Skene accuracy
    (:class:`crowdprop.quality.OneCoinDawidSkene`) fitted on usable answers with
    golds clamped; status from the blocks tables.
gallery (:func:`sample_gallery`)
    Seeded samples of accepted and rejected masks per class drawn by
    :class:`crowdprop.hits.images.OverlayStore` over their image (``image_root``;
    JPEG decoded at a reduced scale, never a whole mask) or on a gray canvas.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..campaign.loop import load_state
from ..campaign.store import RunDir
from ..io import atomic_write_text
from . import figures
from .summary import class_codes, compute_report, labels_by_class, precision_estimates_by_class

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"

CLASS_COLUMNS = ["category_id", "name", "masks", "accepted", "rejected", "open", "questions", "est_precision",
                 "est_precision_lo", "est_precision_hi", "true_precision", "mean_iou"]
WORKER_COLUMNS = ["worker_id", "assignments", "approved", "rejected", "answers", "golds", "golds_correct",
                  "gold_accuracy", "gold_accuracy_lo", "gold_accuracy_hi", "skill", "hours", "status"]


# ------------------------------------------------------------------------------ tables
def final_labels(run: RunDir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The committed state's labels.

    Returns
    -------
    status : ndarray of int8, shape (n_nodes,)
        Node status codes (``crowdprop.schema.NODE_*``).
    label_p : ndarray of float64, shape (n_masks,)
        Aggregated probability that each mask is correct (NaN: not asked).
    final : ndarray of int8, shape (n_masks,)
        1 accepted, 0 rejected, -1 open.
    """
    state = load_state(run)
    assert state.final is not None  # load_state fills it from the committed labels
    return state.status, state.label_p, state.final


def _category_names(run: RunDir) -> dict[int, str]:
    cats = run.table("categories")
    if cats is None or len(cats) == 0:
        return {}
    return {int(i): str(n) for i, n in zip(cats["id"], cats["name"])}


def class_table(run: RunDir, *, status: np.ndarray, label_p: np.ndarray, final: np.ndarray,
                replay: bool = False) -> pd.DataFrame:
    """One row per class: mask counts by final label, questions and precision.

    Parameters
    ----------
    run : RunDir
    status : ndarray of int8, shape (n_nodes,)
    label_p : ndarray of float64, shape (n_masks,)
    final : ndarray of int8, shape (n_masks,)
        As returned by :func:`final_labels`.
    replay : bool
        Add ``true_precision`` and ``mean_iou`` from ``gt_iou`` (else NaN).

    Returns
    -------
    DataFrame, shape (n_classes, len(CLASS_COLUMNS))
        Sorted by number of masks (descending), then ``category_id``.
    """
    cfg = run.config
    masks = run.masks
    cat = masks["category_id"].to_numpy(np.int64)
    iou = masks["gt_iou"].to_numpy(np.float64)
    correct = iou > cfg.campaign.correct_iou
    answers = run.read_rounds("answers")
    decisions = run.read_rounds("decisions")
    if len(answers):
        plain = answers[answers["used"].astype(bool) & ~answers["is_gold"].astype(bool)]
        q_per_cat = pd.Series(cat[plain["mask_row"].to_numpy(np.int64)]).value_counts()
    else:
        q_per_cat = pd.Series(dtype=np.int64)
    names = _category_names(run)
    # grouped by class in one pass: counts by bincount, the estimates by
    # precision_estimates_by_class (the same numbers as a precision_estimate call per class)
    uniq, code = class_codes(cat)
    k = len(uniq)
    by_label = labels_by_class(code, k, final)
    acc_all = final == 1
    if replay:
        n_correct = np.bincount(code[acc_all], weights=correct[acc_all].astype(np.float64), minlength=k)
        # mean IoU per class: the accepted masks' IoUs in row order, cut by class (np.mean's sum per segment)
        acc_rows = np.flatnonzero(acc_all)
        acc_rows = acc_rows[np.argsort(code[acc_rows], kind="stable")]
        acc_iou = iou[acc_rows]
        seg = np.searchsorted(code[acc_rows], np.arange(k + 1))
    with_est = [int(c) for c, n_acc in zip(uniq.tolist(), by_label[:, 0].tolist()) if n_acc] if len(decisions) else []
    ests = precision_estimates_by_class(run, status, decisions, label_p, final, with_est,
                                        credible=cfg.policy.credible, seed=cfg.campaign.seed, answers=answers)
    rows = []
    nan3 = (float("nan"), float("nan"), float("nan"))
    for i, c in enumerate(uniq.tolist()):
        n_acc = int(by_label[i, 0])
        est, lo, hi = ests.get(int(c), nan3)
        rows.append({
            "category_id": int(c), "name": names.get(int(c), str(int(c))), "masks": int(by_label[i].sum()),
            "accepted": n_acc, "rejected": int(by_label[i, 1]),
            "open": int(by_label[i, 2]), "questions": int(q_per_cat.get(c, 0)),
            "est_precision": est, "est_precision_lo": lo, "est_precision_hi": hi,
            "true_precision": float(n_correct[i] / n_acc) if replay and n_acc else float("nan"),
            "mean_iou": float(acc_iou[seg[i]:seg[i + 1]].mean()) if replay and n_acc else float("nan"),
        })
    df = pd.DataFrame(rows, columns=CLASS_COLUMNS)
    return df.sort_values(["masks", "category_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def worker_table(run: RunDir, *, credible: float = 0.95) -> pd.DataFrame:
    """One row per worker who submitted work.

    Parameters
    ----------
    run : RunDir
    credible : float
        Mass of the gold-accuracy interval (Beta(1, 1) prior).

    Returns
    -------
    DataFrame, shape (n_workers, len(WORKER_COLUMNS))
        ``answers`` counts every answer recorded (usable or not), ``golds`` /
        ``golds_correct`` the gold answers and those matching the gold label,
        ``gold_accuracy(_lo, _hi)`` the Beta posterior mean and interval,
        ``skill`` the one-coin Dawid-Skene accuracy (NaN: no usable answer),
        ``status`` one of ``ok``, ``soft-blocked``, ``hard-blocked``. Sorted by
        answers (descending), then worker id.
    """
    from ..quality import OneCoinDawidSkene, beta_interval

    ass = run.read_rounds("assignments")
    if len(ass) == 0:
        return pd.DataFrame(columns=WORKER_COLUMNS)
    ans = run.read_rounds("answers")
    qs = run.read_rounds("questions")
    blocks = run.read_rounds("blocks")
    workers = sorted(set(ass["worker_id"].astype(str)))
    out = pd.DataFrame({"worker_id": workers}).set_index("worker_id")
    g = ass.assign(worker_id=ass["worker_id"].astype(str), approved=ass["approved"].astype(bool)).groupby("worker_id")
    out["assignments"] = g.size()
    out["approved"] = g["approved"].sum()
    out["rejected"] = out["assignments"] - out["approved"]
    out["hours"] = g["work_seconds"].sum() / 3600.0
    if len(ans):
        ans = ans.assign(worker_id=ans["worker_id"].astype(str))
        out["answers"] = ans.groupby("worker_id").size()
        gold = ans[ans["is_gold"].astype(bool)].merge(qs[["question_id", "gold_label"]], on="question_id", how="left")
        gold["ok"] = gold["label"].astype(np.int64) == gold["gold_label"].astype(np.int64)
        out["golds"] = gold.groupby("worker_id").size()
        out["golds_correct"] = gold.groupby("worker_id")["ok"].sum()
    for c in ("answers", "golds", "golds_correct"):
        out[c] = out[c].fillna(0).astype(np.int64) if c in out else 0
    mean, lo, hi = beta_interval(out["golds_correct"].to_numpy(np.float64),
                                 (out["golds"] - out["golds_correct"]).to_numpy(np.float64), credible=credible)
    has = out["golds"].to_numpy() > 0
    out["gold_accuracy"] = np.where(has, mean, np.nan)
    out["gold_accuracy_lo"] = np.where(has, lo, np.nan)
    out["gold_accuracy_hi"] = np.where(has, hi, np.nan)
    out["skill"] = np.nan
    if len(ans):
        used = ans[ans["used"].astype(bool)]
        if len(used):
            data = pd.DataFrame({"task": used["mask_row"].to_numpy(np.int64), "worker": used["worker_id"],
                                 "label": used["label"].to_numpy(np.int64)}).drop_duplicates(["task", "worker"],
                                                                                            keep="last")
            golds = run.golds
            gd = pd.DataFrame({"task": golds["mask_row"].to_numpy(np.int64),
                               "label": golds["label"].to_numpy(np.int64)})
            gd = gd[gd["task"].isin(data["task"])]
            est = OneCoinDawidSkene().fit(data, gold=gd if len(gd) else None)
            out["skill"] = est.skills_.reindex(out.index).to_numpy(np.float64)
    out["status"] = "ok"
    if len(blocks):
        for w, kind in zip(blocks["worker_id"].astype(str), blocks["kind"].astype(str)):
            if w not in out.index:
                continue
            if kind == "hard" or out.at[w, "status"] == "ok":
                out.at[w, "status"] = f"{kind}-blocked"
    out = out.reset_index()[WORKER_COLUMNS]
    return out.sort_values(["answers", "worker_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def cost_breakdown(run: RunDir, rep: dict) -> dict:
    """Where the dollars went.

    Returns
    -------
    dict
        ``rewards``, ``fees``, ``bonuses``, ``total`` (USD charged: approved work
        only); ``golds`` (the share of ``total`` paid for gold questions, by
        question count); ``per_accepted_mask`` and ``per_question``;
        ``rejected_assignments``, ``rejected_hours``, ``rejected_reward`` (reward
        those assignments would have earned, not paid), ``rejected_answers``;
        ``expired_hits``; ``budget``.
    """
    spend = run.read_rounds("spend")
    ass = run.read_rounds("assignments")
    hits = run.read_rounds("hits")
    ans = run.read_rounds("answers")
    t = rep["total"]

    from ..campaign.ledger import hits_reward_cents, spend_cents, spent_by_kind

    by_kind = spent_by_kind(spend)  # the ledger's cents; dollars are the view

    def kind(k):
        return by_kind.get(k, 0) / 100
    total = int(spend_cents(spend).sum()) / 100 if len(spend) else 0.0
    out = {"rewards": kind("reward"), "fees": kind("fee"), "bonuses": kind("bonus"), "total": total,
           "budget": float(run.config.campaign.budget_usd)}
    all_q = t.get("questions", 0) + t.get("golds", 0)
    out["golds"] = total * t.get("golds", 0) / all_q if all_q else 0.0
    out["per_accepted_mask"] = total / t["accepted"] if t.get("accepted") else float("nan")
    out["per_question"] = total / t["questions"] if t.get("questions") else float("nan")
    rej = ass[~ass["approved"].astype(bool)] if len(ass) else ass
    out["rejected_assignments"] = int(len(rej))
    out["rejected_hours"] = float(rej["work_seconds"].sum()) / 3600.0 if len(rej) else 0.0
    if len(rej) and len(hits):
        reward = dict(zip(hits["token"], hits_reward_cents(hits)))
        out["rejected_reward"] = sum(int(reward.get(tk, 0)) for tk in rej["token"]) / 100
    else:
        out["rejected_reward"] = 0.0
    out["rejected_answers"] = int((~ans["used"].astype(bool)).sum()) if len(ans) else 0
    out["expired_hits"] = int(hits["expired"].astype(bool).sum()) if len(hits) else 0
    return out


def sample_gallery(run: RunDir, final: np.ndarray, *, rng: np.random.Generator, per_class: int = 4,
                   max_classes: int = 24, image_root: str | os.PathLike | None = None, out_px: int = 104,
                   progress: bool | None = None) -> list[dict]:
    """Thumbnails of sampled accepted and rejected masks, per class.

    Parameters
    ----------
    run : RunDir
    final : ndarray of int8, shape (n_masks,)
        1 accepted, 0 rejected, -1 open.
    rng : numpy.random.Generator
        Draws the samples (classes are taken in order of mask count, then id).
    per_class : int
        At most this many accepted and this many rejected masks per class.
    max_classes : int
        Classes shown (those with the most masks).
    image_root : path, optional
        Folder with the files named by images.parquet ``file_name``; without it
        (or for a file not found) masks are drawn on a gray canvas.
    out_px : int
        Thumbnail side in pixels.
    progress : bool or None
        tqdm bar over thumbnails (None: only when stderr is a terminal).

    Returns
    -------
    list of dict, one per class
        ``category_id``, ``name``, ``accepted`` and ``rejected``: lists of dicts with
        ``mask_id``, ``src`` (JPEG data URI), ``score``, ``gt_iou``, ``file_name``,
        ``coco_url``.
    """
    from tqdm.auto import tqdm

    from ..hits.images import OverlayStore

    masks = run.masks
    images = run.table("images")
    store = OverlayStore(_NoTarget(), images=images, image_root=image_root, out_px=out_px, min_crop=64, fmt="jpeg",
                         source=run.path / "images.parquet")  # thumbnails decode neither mask nor image whole
    names = _category_names(run)
    cat = masks["category_id"].to_numpy(np.int64)
    cats, code = class_codes(cat)
    counts = np.bincount(code, minlength=len(cats))
    order = np.lexsort((cats, -counts))[:max_classes]
    picks: list[tuple[int, dict[str, np.ndarray]]] = []
    for c in cats[order]:
        rows_of: dict[str, np.ndarray] = {}
        for key, lab in (("accepted", 1), ("rejected", 0)):
            rows = np.flatnonzero((cat == c) & (final == lab))
            if len(rows) > per_class:
                rows = np.sort(rng.choice(rows, per_class, replace=False))
            rows_of[key] = rows
        picks.append((int(c), rows_of))
    total = sum(len(rows) for _, rows_of in picks for rows in rows_of.values())
    # file names and URLs of the pictured masks' images only (not a dict of every image)
    files: dict[int, str] = {}
    urls: dict[int, str] = {}
    if images is not None and total:
        picked = np.concatenate([rows for _, rows_of in picks for rows in rows_of.values()]).astype(np.int64)
        ids = masks["image_id"].to_numpy(np.int64)[picked]
        img = images[images["id"].astype(np.int64).isin(ids)]
        files = dict(zip(img["id"].astype(int), img["file_name"].astype(str)))
        if "coco_url" in images:
            urls = dict(zip(img["id"].astype(int), img["coco_url"].fillna("").astype(str)))
    out = []
    with tqdm(total=total, desc="report gallery", unit="mask", leave=False,
              disable=None if progress is None else not progress) as bar:
        for c, rows_of in picks:
            entry: dict = {"category_id": c, "name": names.get(c, str(c))}
            for key in ("accepted", "rejected"):
                thumbs = []
                for r in rows_of[key]:
                    row = masks.iloc[int(r)]
                    image_id = int(row["image_id"])
                    thumbs.append({"mask_id": int(row["mask_id"]),
                                   "src": figures.data_uri(store.render(row), "image/jpeg"),
                                   "score": float(row["score"]), "gt_iou": float(row["gt_iou"]),
                                   "file_name": files.get(image_id, ""), "coco_url": urls.get(image_id, "")})
                    bar.update(1)
                entry[key] = thumbs
            out.append(entry)
    return out


class _NoTarget:
    """The gallery's pictures go into the page, not to any image target (``OverlayStore.render`` only)."""

    def has(self, name: str) -> bool:
        return False

    def put(self, name: str, data: bytes, content_type: str) -> None:
        raise RuntimeError("report thumbnails are rendered, never stored")

    def url(self, name: str) -> str:
        raise RuntimeError("report thumbnails are rendered, never stored")


# ------------------------------------------------------------------------------ page
def _fmt(v, spec: str = ".3f", none: str = "–") -> str:
    if v is None:
        return none
    try:
        if isinstance(v, float) and math.isnan(v):
            return none
    except TypeError:
        pass
    return format(v, spec)


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["f"] = _fmt
    env.filters["usd"] = lambda v: _fmt(v, ",.2f")
    env.filters["pct"] = lambda v: _fmt(None if v is None else 100.0 * v, ".1f")
    env.filters["int"] = lambda v: _fmt(None if v is None else int(v), ",d")
    return env


def render_report(run: RunDir, rep: dict | None = None, *, image_root: str | os.PathLike | None = None,
                  seed: int | None = None, per_class: int = 4, max_classes: int = 24,
                  progress: bool | None = None) -> str:
    """The report page as one HTML string.

    Parameters
    ----------
    run : RunDir
    rep : dict, optional
        :func:`~crowdprop.report.summary.compute_report` of ``run`` (computed when None).
    image_root : path, optional
        Folder with the image files (see :func:`sample_gallery`); default: the one the run
        recorded at ``init`` (:func:`crowdprop.hits.images.recorded_image_root`), else gray.
    seed : int, optional
        Seed of the gallery's samples (default: the campaign seed).
    per_class, max_classes : int
        Gallery size (see :func:`sample_gallery`).
    progress : bool or None
        Progress bar while drawing thumbnails (None: only on a terminal).
    """
    from ..hits.images import recorded_image_root

    rep = compute_report(run) if rep is None else rep
    replay = bool(rep["replay"])
    if image_root is None:
        image_root = recorded_image_root(run.campaign)
    status, label_p, final = final_labels(run)
    classes = class_table(run, status=status, label_p=label_p, final=final, replay=replay)
    # The precision shown per class is the audited one (report.json's "classes"), with its
    # certified lower bound; the posterior estimate of class_table is what audits replace.
    audited = {c["category_id"]: c for c in rep.get("classes", [])}
    for col in ("est_precision", "est_precision_lo", "est_precision_hi", "certified_precision"):
        classes[col] = [audited.get(int(c), {}).get(col) for c in classes["category_id"]]
        classes[col] = classes[col].astype(float)
    workers = worker_table(run, credible=run.config.policy.credible)
    costs = cost_breakdown(run, rep)
    rng = np.random.default_rng([run.config.campaign.seed if seed is None else int(seed), 20211])
    gallery = sample_gallery(run, final, rng=rng, per_class=per_class, max_classes=max_classes,
                             image_root=image_root, progress=progress)
    rounds = rep["rounds"]
    figs = {}
    if rounds:
        figs["curves"] = figures.data_uri(figures.curves(rounds, replay=replay))
        figs["spend"] = figures.data_uri(figures.spend_per_round(rounds, budget_usd=costs["budget"]))
        if replay:
            figs["truth"] = figures.data_uri(figures.true_vs_estimated(rounds))
    top = classes.head(30)
    if len(top):
        figs["classes"] = figures.data_uri(figures.class_bars(top["name"].tolist(), top["accepted"],
                                                              top["rejected"], top["open"]))
    cfg = run.config
    ctx = {
        "rep": rep, "t": rep["total"], "rounds": rounds, "replay": replay, "figs": figs,
        "classes": classes.to_dict("records"), "workers": workers.to_dict("records"), "costs": costs,
        "gallery": gallery, "campaign": run.campaign, "run_dir": str(run.path),
        "policy": cfg.policy, "crowd": cfg.crowd, "campaign_cfg": cfg.campaign,
        "image_source": "image files" if image_root else "gray canvas (no image files given)",
        "palette": figures.PALETTE, "n_classes_shown": min(len(classes), max_classes),
    }
    return _environment().get_template("report.html").render(**ctx)


def write_report_html(run: RunDir, rep: dict | None = None, *, path: str | os.PathLike | None = None,
                      **options) -> Path:
    """Write :func:`render_report` atomically to ``path`` (default ``RUN_DIR/report.html``)."""
    path = Path(path) if path is not None else run.path / "report.html"
    atomic_write_text(path, render_report(run, rep, **options))
    log.info("wrote %s", path)
    return path
