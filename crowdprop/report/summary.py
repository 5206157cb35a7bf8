"""The campaign report: per round and in total, from the Parquet state alone.

Figures
-------
questions, golds
    Non-gold and gold questions answered in usable (approved, well-formed) work.
dollars
    Rewards plus MTurk fees actually charged (approved work only).
worker_hours
    Sum of the time workers spent on submitted assignments.
accepted / rejected / open
    Mask status after the round (direct labels first, then cluster verdicts).
est_precision (lo, hi)
    Estimated precision of the accepted masks: accepted clusters contribute
    ``size x theta_c`` with ``theta_c ~ Beta(a + yes_c, b + no_c)``; directly
    answered masks contribute their aggregated probability. The interval is the
    central credible interval of that mixture, corrected for worker error measured
    on gold questions (see :func:`precision_estimate`).
true_precision, mean_iou, recall (replay only)
    From ground truth: share of accepted masks with IoU > ``correct_iou``, their
    mean IoU, and the share of non-crowd ground-truth instances covered by an
    accepted mask with IoU > ``correct_iou``.
speedup
    ``accepted x manual_seconds_per_mask / worker seconds``: drawing the
    accepted masks by hand against answering the questions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..campaign.loop import labels_for, replay_decisions
from ..campaign.ledger import spend_cents, spent_by_kind
from ..campaign.store import RunDir
from ..policy.controller import initial_status, mask_status
from ..schema import ACCEPTED


def answer_noise(answers: pd.DataFrame, golds: pd.DataFrame, prior: float = 1.0) -> tuple[float, float, float, float]:
    """Beta posteriors of the crowd's sensitivity P(yes | correct) and specificity
    P(no | wrong), pooled over usable answers to gold questions: (a_sens, b_sens, a_spec, b_spec)."""
    if answers is None or len(answers) == 0 or len(golds) == 0:
        return prior, prior, prior, prior
    g = answers[answers["used"].astype(bool) & answers["is_gold"].astype(bool)]
    truth = golds.drop_duplicates("mask_row").set_index("mask_row")["label"]
    t = truth.reindex(g["mask_row"]).to_numpy()
    lab = g["label"].to_numpy()
    ok = ~np.isnan(t.astype(float))
    t, lab = t[ok].astype(int), lab[ok].astype(int)
    return (prior + float(((t == 1) & (lab == 1)).sum()), prior + float(((t == 1) & (lab == 0)).sum()),
            prior + float(((t == 0) & (lab == 0)).sum()), prior + float(((t == 0) & (lab == 1)).sum()))


def precision_estimate(run: RunDir, status: np.ndarray, decisions: pd.DataFrame, label_p: np.ndarray,
                       final: np.ndarray, *, credible: float = 0.95, seed: int = 0,
                       answers: pd.DataFrame | None = None):
    """Estimated precision of accepted masks with a credible interval: (mean, lo, hi).

    Accepted cluster ``c`` (``n_c`` members not answered directly) has a Beta
    posterior over the probability ``phi_c`` that a worker says yes about one of
    its members. With raw answers (aggregation ``raw`` or ``mv``) workers err, so
    the share of correct members is ``theta_c = (phi_c - (1 - spec)) / (sens + spec - 1)``,
    with the crowd's sensitivity and specificity measured on gold questions (Beta
    posteriors). A mask accepted on its own answer is correct with probability
    ``sens pi / (sens pi + (1 - spec)(1 - pi))`` (``pi``: share of correct masks among
    those asked, from the yes rate the same way). With Dawid-Skene aggregation the
    labels are already posterior probabilities and are used as they are.
    Monte Carlo over (sens, spec) and a normal approximation of the sum over clusters.
    """
    from ..quality import QualitySection

    forest = run.forest
    cfg = run.config.policy
    acc_nodes = np.flatnonzero(status == ACCEPTED)
    direct = ~np.isnan(label_p) & (final == 1)
    counts = np.zeros(0)
    a = b = np.zeros(0)
    if len(acc_nodes):
        last = decisions[decisions["decision"] == "accept"].drop_duplicates("node_id", keep="last")
        last = last.set_index("node_id").loc[acc_nodes]
        has_direct = ~np.isnan(label_p)[forest.order]
        cd = np.concatenate([[0], np.cumsum(has_direct)])
        counts = (forest.end[acc_nodes] - forest.start[acc_nodes]) - (cd[forest.end[acc_nodes]] - cd[forest.start[acc_nodes]])
        yes = last["yes"].to_numpy(np.float64)
        n = last["n_labeled"].to_numpy(np.float64)
        a = cfg.prior_a + yes
        b = cfg.prior_b + (n - yes)
    n_clusters = float(counts.sum())
    n_direct = int(direct.sum())
    total = n_clusters + n_direct
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng([seed, 99])
    S = 4000
    raw = QualitySection.from_config(run.config).aggregation in ("raw", "mv")
    if raw and answers is not None:
        s_a, s_b, p_a, p_b = answer_noise(answers, run.golds)
        sens = rng.beta(s_a, s_b, S)
        spec = rng.beta(p_a, p_b, S)
    else:
        sens = spec = np.ones(S)
    youden = np.maximum(sens + spec - 1.0, 1e-3)
    # clusters: sum_c n_c phi_c ~ Normal, then the noise correction per draw
    mu = float((counts * a / (a + b)).sum())
    var = float((counts ** 2 * a * b / ((a + b) ** 2 * (a + b + 1))).sum())
    phi_sum = rng.normal(mu, np.sqrt(var), S) if var > 0 else np.full(S, mu)
    theta_sum = np.clip((phi_sum - (1.0 - spec) * n_clusters) / youden, 0.0, n_clusters)
    # direct answers
    if n_direct:
        if raw and answers is not None:
            plain = answers[answers["used"].astype(bool) & ~answers["is_gold"].astype(bool)]
            # the yes-rate of the masks in scope (label_p is NaN outside it, e.g. other classes)
            plain = plain[~np.isnan(label_p[plain["mask_row"].to_numpy(np.int64)])]
            y = float(plain["label"].mean()) if len(plain) else 0.5
            pi = np.clip((y - (1.0 - spec)) / youden, 0.01, 0.99)
            ppv = sens * pi / (sens * pi + (1.0 - spec) * (1.0 - pi))
            direct_sum = rng.binomial(n_direct, ppv).astype(np.float64)
        else:
            p = label_p[direct]
            direct_sum = rng.normal(p.sum(), np.sqrt((p * (1 - p)).sum()), S)
    else:
        direct_sum = np.zeros(S)
    prec = np.clip((theta_sum + direct_sum) / total, 0.0, 1.0)
    tail = (1 - credible) / 2
    lo, hi = np.quantile(prec, [tail, 1 - tail])
    return float(prec.mean()), float(lo), float(hi)


def compute_report(run: RunDir) -> dict:
    """Every figure of the report as a JSON-ready dict (``rounds`` and ``total``)."""
    cfg = run.config
    masks = run.masks
    forest = run.forest
    n = len(masks)
    answers = run.read_rounds("answers")
    assignments = run.read_rounds("assignments")
    decisions = run.read_rounds("decisions")
    spend = run.read_rounds("spend")
    hits = run.read_rounds("hits")
    gt = run.table("gt")
    replay = bool(np.isfinite(masks["gt_iou"].to_numpy(np.float64)).any()) and gt is not None
    iou = masks["gt_iou"].to_numpy(np.float64)
    correct = iou > cfg.campaign.correct_iou
    gt_ids = gt.loc[gt["iscrowd"] == 0, "id"].to_numpy() if replay else np.zeros(0)

    rows = []
    status = initial_status(forest)
    cum = {"questions": 0, "golds": 0, "hits": 0, "assignments": 0, "usd": 0, "seconds": 0.0}
    for r in run.rounds():
        d_r = decisions[decisions["round"] == r] if len(decisions) else decisions
        replay_decisions(run, status, d_r)
        ans_r = answers[answers["round"] <= r] if len(answers) else answers
        label_p = labels_for(run, ans_r)
        final = mask_status(forest, status, label_p)
        q_r = answers[(answers["round"] == r) & answers["used"]] if len(answers) else answers
        nq = int((~q_r["is_gold"]).sum()) if len(q_r) else 0
        ng = int(q_r["is_gold"].sum()) if len(q_r) else 0
        a_r = assignments[assignments["round"] == r] if len(assignments) else assignments
        s_r = spend[spend["round"] == r] if len(spend) else spend
        h_r = hits[hits["round"] == r] if len(hits) else hits
        usd_cents = int(spend_cents(s_r).sum()) if len(s_r) else 0  # the ledger's cents; dollars are the view
        usd = usd_cents / 100
        secs = float(a_r["work_seconds"].sum()) if len(a_r) else 0.0
        for k, v in (("questions", nq), ("golds", ng), ("hits", len(h_r)), ("assignments", len(a_r)),
                     ("usd", usd_cents), ("seconds", secs)):
            cum[k] += v
        acc = final == 1
        est, lo, hi = precision_estimate(run, status, decisions[decisions["round"] <= r], label_p, final,
                                         credible=cfg.policy.credible, seed=cfg.campaign.seed, answers=ans_r)
        row = {
            "round": r,
            "questions": nq, "golds": ng, "hits": int(len(h_r)), "assignments": int(len(a_r)),
            "usd": usd, "worker_hours": secs / 3600.0,
            "cum_questions": cum["questions"], "cum_usd": cum["usd"] / 100,
            "cum_worker_hours": cum["seconds"] / 3600.0,
            "accepted": int(acc.sum()), "rejected": int((final == 0).sum()), "open": int((final < 0).sum()),
            "accepted_clusters": int((status == ACCEPTED).sum()),
            "est_precision": est, "est_precision_lo": lo, "est_precision_hi": hi,
        }
        if replay:
            row.update(_truth_figures(acc, correct, iou, masks, gt_ids, cfg.campaign.correct_iou))
        rows.append(row)

    total = dict(rows[-1]) if rows else {"accepted": 0, "rejected": 0, "open": n, "cum_questions": 0, "cum_usd": 0.0,
                                          "cum_worker_hours": 0.0}
    for k in ("round", "questions", "golds", "hits", "assignments", "usd", "worker_hours"):
        total.pop(k, None)
    total["rounds"] = len(rows)
    total["masks"] = n
    total["questions"] = total.pop("cum_questions")
    total["golds"] = cum["golds"]
    total["hits"] = cum["hits"]
    total["assignments"] = cum["assignments"]
    total["usd"] = total.pop("cum_usd")
    total["worker_hours"] = total.pop("cum_worker_hours")
    if len(spend):
        by_kind = spent_by_kind(spend)
        total["usd_rewards"] = by_kind.get("reward", 0) / 100
        total["usd_fees"] = by_kind.get("fee", 0) / 100
        total["usd_bonuses"] = by_kind.get("bonus", 0) / 100
    all_q = total["questions"] + total["golds"]
    total["usd_golds"] = round(total["usd"] * total["golds"] / all_q, 2) if all_q else 0.0
    if len(assignments):
        rej = assignments[~assignments["approved"].astype(bool)]
        total["rejected_assignments"] = int(len(rej))
        total["rejected_work_hours"] = float(rej["work_seconds"].sum()) / 3600.0
    total["masks_per_question"] = total["accepted"] / total["questions"] if total["questions"] else 0.0
    secs = total["worker_hours"] * 3600.0
    manual = total["accepted"] * cfg.campaign.manual_seconds_per_mask
    total["manual_hours"] = manual / 3600.0
    total["speedup"] = manual / secs if secs > 0 else None
    total["budget_usd"] = cfg.campaign.budget_usd
    return {"run_dir": str(run.path), "campaign_id": run.campaign.get("campaign_id"),
            "policy": cfg.policy.name, "sampling": cfg.policy.sampling, "seed": cfg.campaign.seed,
            "replay": replay, "rounds": rows, "total": total}


def _truth_figures(acc, correct, iou, masks, gt_ids, thr) -> dict:
    n_acc = int(acc.sum())
    out = {"true_precision": float(correct[acc].mean()) if n_acc else None,
           "mean_iou": float(iou[acc].mean()) if n_acc else None}
    hit = masks.loc[acc & (iou > thr), "gt_ann_id"].to_numpy()
    out["recall"] = float(np.isin(gt_ids, hit).mean()) if len(gt_ids) else None
    return out


def format_report(rep: dict) -> str:
    """The report as a plain-text table for the terminal."""
    rows = rep["rounds"]
    t = rep["total"]
    cols = ["round", "questions", "hits", "usd", "worker_hours", "accepted", "rejected", "open", "est_precision"]
    if rep["replay"]:
        cols += ["true_precision", "mean_iou", "recall"]
    heads = {"worker_hours": "hours", "est_precision": "est.prec", "true_precision": "true.prec",
             "mean_iou": "mIoU", "questions": "questions"}
    lines = []
    hdr = [heads.get(c, c) for c in cols]
    lines.append("  ".join(f"{h:>9}" for h in hdr))
    shown = rows if len(rows) <= 30 else rows[:10] + [None] + rows[-10:]
    for r in shown:
        if r is None:
            lines.append(f"{'...':>9}")
            continue
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append(f"{'-':>9}")
            elif isinstance(v, float):
                cells.append(f"{v:>9.3f}" if c not in ("usd",) else f"{v:>9.2f}")
            else:
                cells.append(f"{v:>9}")
        lines.append("  ".join(cells))
    lines.append("")
    ci = ""
    if t.get("est_precision") is not None and not np.isnan(t.get("est_precision", np.nan)):
        ci = f"{t['est_precision']:.3f} [{t['est_precision_lo']:.3f}, {t['est_precision_hi']:.3f}]"
    lines.append(f"total: {t['rounds']} rounds, {t['questions']} questions (+{t['golds']} gold), {t['hits']} HITs, "
                 f"${t['usd']:.2f} (budget ${t['budget_usd']:.2f}), {t['worker_hours']:.2f} worker hours")
    lines.append(f"masks: {t['accepted']} accepted, {t['rejected']} rejected, {t['open']} open of {t['masks']}; "
                 f"{t['masks_per_question']:.2f} accepted masks per question")
    if ci:
        lines.append(f"estimated precision of accepted masks: {ci}")
    if rep["replay"] and t.get("true_precision") is not None:
        lines.append(f"replay truth: precision {t['true_precision']:.3f}, mean IoU {t['mean_iou']:.3f}, "
                     f"recall {t['recall']:.3f}")
    if t.get("speedup"):
        lines.append(f"speedup against drawing polygons: {t['speedup']:.1f}x "
                     f"({t['manual_hours']:.2f} h by hand vs {t['worker_hours']:.2f} h of yes/no)")
    return "\n".join(lines)
