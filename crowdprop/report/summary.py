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
    Audited precision of the accepted masks (:mod:`crowdprop.policy.audit`): per decision
    source (cluster verdict, verifier, direct answer) the design-based estimate from the
    uniform audit samples, corrected for worker error measured on gold questions, weighted
    by the masks each source accepted. Masks of a source not audited yet count as anything
    in [0, 1], so the interval is honest after every round.
posterior_precision (lo, hi)
    The estimate built from the answers that drove the decisions (each accepted cluster's
    Beta posterior, see :func:`precision_estimate`). Kept for comparison: it inherits the
    luck of the clusters that passed and overstates precision at scale.
audit_questions
    Non-gold questions spent on audits (counted in ``questions`` too).
true_precision, mean_iou, recall (replay only)
    From ground truth: share of accepted masks with IoU > ``correct_iou``, their
    mean IoU, and the share of non-crowd ground-truth instances covered by an
    accepted mask with IoU > ``correct_iou``.
speedup
    ``accepted x manual_seconds_per_mask / worker seconds``: drawing the
    accepted masks by hand against answering the questions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..campaign.evidence import (answer_kinds, crowd_noise, direct_rounds, node_rounds, verdict_arrays)
from ..campaign.loop import labels_for, replay_decisions
from ..campaign.ledger import spend_cents, spent_by_kind
from ..campaign.store import RunDir
from ..policy.audit import (SOURCE_NAMES, audit_roles, audit_stats_by_group, audited_precision,
                            estimate_from_stats, valid_audits)
from ..policy.controller import initial_status, mask_labels
from ..schema import NODE_ACCEPTED, QuestionKind


def class_codes(cats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(cats, return_inverse=True)`` for class ids: by a lookup table when the ids are
    small non-negative integers (no sort of every mask), else by ``np.unique``."""
    cats = np.asarray(cats, dtype=np.int64)
    if len(cats) and cats.min() >= 0 and cats.max() < max(4 * len(cats), 1 << 20):
        present = np.bincount(cats) > 0
        uniq = np.flatnonzero(present)
        lookup = np.cumsum(present) - 1
        return uniq.astype(np.int64), lookup[cats].astype(np.intp)
    uniq, code = np.unique(cats, return_inverse=True)
    return uniq, code.reshape(-1)


def labels_by_class(code: np.ndarray, k: int, final: np.ndarray) -> np.ndarray:
    """``(k, 3)`` counts per class code (:func:`class_codes`): accepted, rejected, open masks."""
    lab = np.where(final == 1, 0, np.where(final == 0, 1, 2))
    return np.bincount(code * 3 + lab, minlength=3 * k).reshape(k, 3)


def _accepted_cluster_terms(run: RunDir, status: np.ndarray, decisions: pd.DataFrame, label_p: np.ndarray):
    """The accepted clusters (node ids), how many of each one's members are not answered
    directly (``n_c``), and the Beta posterior ``(a, b)`` of its last accept decision's answers."""
    forest = run.forest
    cfg = run.config.policy
    acc_nodes = np.flatnonzero(status == NODE_ACCEPTED)
    counts = np.zeros(0, dtype=np.int64)
    a = b = np.zeros(0)
    if len(acc_nodes):
        last = decisions[decisions["decision"] == "accept"].drop_duplicates("node_id", keep="last")
        last = last.set_index("node_id").loc[acc_nodes]
        has_direct = ~np.isnan(label_p)[forest.order]
        cd = np.concatenate([[0], np.cumsum(has_direct)])
        counts = (forest.end[acc_nodes] - forest.start[acc_nodes]) - (cd[forest.end[acc_nodes]]
                                                                      - cd[forest.start[acc_nodes]])
        yes = last["yes"].to_numpy(np.float64)
        n = last["n_labeled"].to_numpy(np.float64)
        a = cfg.prior_a + yes
        b = cfg.prior_b + (n - yes)
    return acc_nodes, counts, a, b


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
    _, counts, a, b = _accepted_cluster_terms(run, status, decisions, label_p)
    direct = ~np.isnan(label_p) & (final == 1)
    n_direct = int(direct.sum())
    raw = run.config.quality.aggregation in ("raw", "mv")
    noise = crowd_noise(answers, run.golds) if raw and answers is not None else None
    y = None
    if n_direct and noise is not None:
        assert answers is not None
        kinds = answer_kinds(answers)
        plain = answers[answers["used"].astype(bool) & ~np.isin(kinds, [QuestionKind.GOLD.value,
                                                                         QuestionKind.AUDIT.value])]
        # the yes-rate of the masks in scope (label_p is NaN outside it, e.g. other classes)
        plain = plain[~np.isnan(label_p[plain["mask_row"].to_numpy(np.int64)])]
        y = float(plain["label"].mean()) if len(plain) else 0.5
    p = label_p[direct]
    return _precision_draws(np.random.default_rng([seed, 99]), noise,
                            mu=float((counts * a / (a + b)).sum()),
                            var=float((counts ** 2 * a * b / ((a + b) ** 2 * (a + b + 1))).sum()),
                            n_clusters=float(counts.sum()), n_direct=n_direct, yes_rate=y,
                            p_sum=p.sum(), p_var=(p * (1 - p)).sum(), credible=credible)


def _precision_draws(rng: np.random.Generator, noise, *, mu: float, var: float, n_clusters: float, n_direct: int,
                     yes_rate: float | None, p_sum: float, p_var: float, credible: float,
                     draws: int = 4000) -> tuple[float, float, float]:
    """The Monte Carlo of :func:`precision_estimate`: (mean, lo, hi) of the accepted masks'
    precision from accepted clusters (``mu``, ``var``: mean and variance of ``sum_c n_c phi_c``
    over ``n_clusters`` masks) and ``n_direct`` masks accepted on their own answers. With
    ``noise`` (Beta parameters of the crowd's sensitivity and specificity; raw answers) worker
    error is removed per draw and a direct accept is correct with the positive predictive value
    of an answer at ``yes_rate``; without it the labels are probabilities (``p_sum``, ``p_var``:
    their sum and sum of ``p (1 - p)``). NaN when there is nothing accepted."""
    total = n_clusters + n_direct
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    S = draws
    if noise is not None:
        sens = rng.beta(noise[0], noise[1], S)
        spec = rng.beta(noise[2], noise[3], S)
    else:
        sens = spec = np.ones(S)
    youden = np.maximum(sens + spec - 1.0, 1e-3)
    # clusters: sum_c n_c phi_c ~ Normal, then the noise correction per draw
    phi_sum = rng.normal(mu, np.sqrt(var), S) if var > 0 else np.full(S, mu)
    theta_sum = np.clip((phi_sum - (1.0 - spec) * n_clusters) / youden, 0.0, n_clusters)
    # direct answers
    if n_direct:
        if noise is not None:
            assert yes_rate is not None  # given with noise whenever there are direct accepts
            pi = np.clip((yes_rate - (1.0 - spec)) / youden, 0.01, 0.99)
            ppv = sens * pi / (sens * pi + (1.0 - spec) * (1.0 - pi))
            direct_sum = rng.binomial(n_direct, ppv).astype(np.float64)
        else:
            direct_sum = rng.normal(p_sum, np.sqrt(p_var), S)
    else:
        direct_sum = np.zeros(S)
    prec = np.clip((theta_sum + direct_sum) / total, 0.0, 1.0)
    tail = (1 - credible) / 2
    lo, hi = np.quantile(prec, [tail, 1 - tail])
    return float(prec.mean()), float(lo), float(hi)


def precision_estimates_by_class(run: RunDir, status: np.ndarray, decisions: pd.DataFrame, label_p: np.ndarray,
                                 final: np.ndarray, classes, *, credible: float = 0.95, seed: int = 0,
                                 answers: pd.DataFrame | None = None) -> dict[int, tuple[float, float, float]]:
    """:func:`precision_estimate` of each class in ``classes``, restricted to the class: its
    accepted clusters (nodes of ``forest.category`` c) and its masks' labels, as if every other
    node were inactive and every other mask unasked and open.

    The same numbers as one call per class with the other classes masked out, without a pass
    over every node, mask and decision per class: the accepted clusters' counts, Beta parameters
    and the directly answered masks are computed once and cut into contiguous per-class
    segments (in the order a per-class call sees them, so the sums are the same bit for bit);
    each class then draws from its own ``default_rng([seed, 99])`` as a per-class call does.
    A cluster's members are the masks of its class (the trees are built per class).
    Returns ``{class: (mean, lo, hi)}``.
    """
    cat = run.masks["category_id"].to_numpy(np.int64)
    classes = [int(c) for c in classes]
    acc_nodes, counts, a, b = _accepted_cluster_terms(run, status, decisions, label_p)
    node_cat = np.asarray(run.forest.category, dtype=np.int64)[acc_nodes]
    # per accepted node, the terms summed per class; nodes sorted by class (stable: by node id within)
    mean_t = counts * a / (a + b)
    var_t = counts ** 2 * a * b / ((a + b) ** 2 * (a + b + 1))
    order = np.argsort(node_cat, kind="stable")
    node_cat, counts, mean_t, var_t = node_cat[order], counts[order], mean_t[order], var_t[order]
    n_lo = np.searchsorted(node_cat, classes, side="left")
    n_hi = np.searchsorted(node_cat, classes, side="right")
    # directly answered accepted masks, sorted by class (by row within)
    direct_rows = np.flatnonzero(~np.isnan(label_p) & (final == 1))
    d_order = np.argsort(cat[direct_rows], kind="stable")
    direct_rows = direct_rows[d_order]
    d_cat = cat[direct_rows]
    d_lo = np.searchsorted(d_cat, classes, side="left")
    d_hi = np.searchsorted(d_cat, classes, side="right")
    raw = run.config.quality.aggregation in ("raw", "mv")
    noise = None
    plain_yes = plain_n = pd.Series(dtype=np.float64)
    if raw and answers is not None:
        noise = crowd_noise(answers, run.golds)
        kinds = answer_kinds(answers)
        plain = answers[answers["used"].astype(bool) & ~np.isin(kinds, [QuestionKind.GOLD.value,
                                                                         QuestionKind.AUDIT.value])]
        rows = plain["mask_row"].to_numpy(np.int64)
        inside = ~np.isnan(label_p[rows])
        pc = pd.Series(cat[rows][inside])
        labels = plain["label"].to_numpy()[inside]
        plain_n = pc.value_counts()
        plain_yes = pd.Series(labels.astype(np.float64)).groupby(pc.to_numpy()).sum()
    p_direct = label_p[direct_rows]
    p_var = p_direct * (1 - p_direct)
    out: dict[int, tuple[float, float, float]] = {}
    for i, c in enumerate(classes):
        n_direct = int(d_hi[i] - d_lo[i])
        y = None
        if noise is not None and n_direct:
            m = int(plain_n.get(c, 0))
            y = float(plain_yes.get(c, 0.0) / m) if m else 0.5
        out[c] = _precision_draws(np.random.default_rng([seed, 99]), noise,
                                  mu=float(mean_t[n_lo[i]:n_hi[i]].sum()), var=float(var_t[n_lo[i]:n_hi[i]].sum()),
                                  n_clusters=float(counts[n_lo[i]:n_hi[i]].sum()), n_direct=n_direct, yes_rate=y,
                                  p_sum=p_direct[d_lo[i]:d_hi[i]].sum(), p_var=p_var[d_lo[i]:d_hi[i]].sum(),
                                  credible=credible)
    return out


def compute_report(run: RunDir) -> dict:
    """Every figure of the report as a JSON-ready dict (``rounds``, ``total``, ``classes``)."""
    cfg = run.config
    masks = run.masks
    forest = run.forest
    n = len(masks)
    answers = run.read_rounds("answers")
    assignments = run.read_rounds("assignments")
    decisions = run.read_rounds("decisions")
    spend = run.read_rounds("spend")
    hits = run.read_rounds("hits")
    verdicts = run.read_rounds("verdicts")
    audits = run.read_rounds("audits")
    gt = run.table("gt")
    replay = bool(np.isfinite(masks["gt_iou"].to_numpy(np.float64)).any()) and gt is not None
    iou = masks["gt_iou"].to_numpy(np.float64)
    correct = iou > cfg.campaign.correct_iou
    gt_ids = gt.loc[gt["iscrowd"] == 0, "id"].to_numpy() if replay and gt is not None else np.zeros(0)
    kinds = answer_kinds(answers) if len(answers) else np.zeros(0, dtype=object)
    seed = cfg.campaign.seed

    rows = []
    status = initial_status(forest)
    cum = {"questions": 0, "golds": 0, "audits": 0, "hits": 0, "assignments": 0, "usd": 0, "seconds": 0.0}
    final = np.full(n, -1, dtype=np.int8)
    source = np.zeros(n, dtype=np.int8)
    ok = audits
    noise = (1.0, 1.0, 1.0, 1.0)
    for r in run.rounds():
        d_r = decisions[decisions["round"] == r] if len(decisions) else decisions
        replay_decisions(run, status, d_r)
        upto = (answers["round"] <= r).to_numpy() if len(answers) else np.zeros(0, dtype=bool)
        ans_r = answers[upto] if len(answers) else answers
        label_p = labels_for(run, ans_r)
        v_r = verdicts[verdicts["round"] <= r] if len(verdicts) else verdicts
        verdict, v_round, _ = verdict_arrays(v_r, n)
        dec_r = decisions[decisions["round"] <= r] if len(decisions) else decisions
        final, source, decided = mask_labels(forest, status, label_p, verdict,
                                             node_round=node_rounds(dec_r, forest.n_nodes),
                                             verdict_round=v_round, direct_round=direct_rounds(ans_r, n))
        this = (answers["round"] == r).to_numpy() & answers["used"].astype(bool).to_numpy() if len(answers) \
            else np.zeros(0, dtype=bool)
        gold_r = this & (kinds == QuestionKind.GOLD.value) if len(answers) else this
        nq = int((this & ~gold_r).sum())
        ng = int(gold_r.sum())
        na = int((this & (kinds == QuestionKind.AUDIT.value)).sum()) if len(answers) else 0
        a_r = assignments[assignments["round"] == r] if len(assignments) else assignments
        s_r = spend[spend["round"] == r] if len(spend) else spend
        h_r = hits[hits["round"] == r] if len(hits) else hits
        usd_cents = int(spend_cents(s_r).sum()) if len(s_r) else 0  # the ledger's cents; dollars are the view
        usd = usd_cents / 100
        secs = float(a_r["work_seconds"].sum()) if len(a_r) else 0.0
        for k, v in (("questions", nq), ("golds", ng), ("audits", na), ("hits", len(h_r)), ("assignments", len(a_r)),
                     ("usd", usd_cents), ("seconds", secs)):
            cum[k] += v
        acc = final == 1
        noise = crowd_noise(ans_r, run.golds)
        aud_r = audits[audits["round"] <= r] if len(audits) else audits
        # The target policy acts on a share of its audits; only the others estimate (policy.audit: roles).
        ok = audit_roles(valid_audits(aud_r, ans_r, final, source, decided), cfg.policy.name == "target")[0]
        est = audited_precision(final, source, ok, noise, credible=cfg.policy.credible,
                                rng=np.random.default_rng([seed, r, 99]))
        post, post_lo, post_hi = precision_estimate(run, status, dec_r, label_p, final, credible=cfg.policy.credible,
                                                    seed=seed, answers=ans_r)
        row = {
            "round": r,
            "questions": nq, "golds": ng, "audit_questions": na, "hits": int(len(h_r)), "assignments": int(len(a_r)),
            "usd": usd, "worker_hours": secs / 3600.0,
            "cum_questions": cum["questions"], "cum_usd": cum["usd"] / 100,
            "cum_worker_hours": cum["seconds"] / 3600.0,
            "accepted": int(acc.sum()), "rejected": int((final == 0).sum()), "open": int((final < 0).sum()),
            "accepted_clusters": int((status == NODE_ACCEPTED).sum()),
            "est_precision": est.mean, "est_precision_lo": est.lo, "est_precision_hi": est.hi,
            "posterior_precision": post, "posterior_precision_lo": post_lo, "posterior_precision_hi": post_hi,
        }
        if replay:
            row.update(_truth_figures(acc, correct, iou, masks, gt_ids, cfg.campaign.correct_iou))
        rows.append(row)

    total: dict[str, Any] = dict(rows[-1]) if rows else {"accepted": 0, "rejected": 0, "open": n, "cum_questions": 0, "cum_usd": 0.0,
                                          "cum_worker_hours": 0.0}
    for k in ("round", "questions", "golds", "audit_questions", "hits", "assignments", "usd", "worker_hours"):
        total.pop(k, None)
    total["rounds"] = len(rows)
    total["masks"] = n
    total["questions"] = total.pop("cum_questions")
    total["audit_questions"] = cum["audits"]
    total["audit_share"] = cum["audits"] / total["questions"] if total["questions"] else 0.0
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
    by_source, classes = _sources_and_classes(run, final, source, ok, noise, correct if replay else None, seed)
    total["by_source"] = by_source
    return {"run_dir": str(run.path), "campaign_id": run.campaign.get("campaign_id"),
            "policy": cfg.policy.name, "sampling": cfg.policy.sampling, "seed": seed,
            "target_precision": cfg.policy.target_precision if cfg.policy.name == "target" else None,
            "replay": replay, "rounds": rows, "total": total, "classes": classes}


def _sources_and_classes(run: RunDir, final, source, ok, noise, correct, seed: int) -> tuple[dict, list]:
    """Accepted masks and audited precision per decision source, and per class the audited
    precision with its one-sided lower bound at ``target_confidence`` (certified precision)."""
    cfg = run.config.policy
    by_source: dict[str, dict[str, Any]] = {}
    est = audited_precision(final, source, ok, noise, credible=cfg.credible, rng=np.random.default_rng([seed, 98]))
    for s, name in SOURCE_NAMES.items():
        sel = (final == 1) & (source == s)
        rec: dict[str, Any] = {"accepted": int(sel.sum()), "rejected": int(((final == 0) & (source == s)).sum())}
        rec.update({k: v for k, v in (est.by_source.get(name) or {}).items() if k != "masks"})
        if correct is not None:
            rec["true_precision"] = float(correct[sel].mean()) if sel.any() else None
        by_source[name] = rec
    cats = run.masks["category_id"].to_numpy(np.int64)
    names = {}
    ctab = run.table("categories")
    if ctab is not None:
        names = dict(zip(ctab["id"].astype(np.int64), ctab["name"].astype(str)))
    classes: list[dict[str, Any]] = []
    conf = 2 * cfg.target_confidence - 1.0
    # grouped by class in one pass (counts by bincount, audit sums by sorted segments); each
    # class's draws come from its own generator as before, so the figures are the same
    uniq, code = class_codes(cats)
    k = len(uniq)
    by_label = labels_by_class(code, k, final)
    stats = audit_stats_by_group(final, source, ok, code, k)
    if correct is not None:
        acc_mask = final == 1
        n_correct = np.bincount(code[acc_mask], weights=correct[acc_mask].astype(np.float64), minlength=k)
    for i, c in enumerate(uniq.tolist()):
        acc = int(by_label[i, 0])
        rec = {"category_id": int(c), "name": names.get(int(c), str(c)), "masks": int(by_label[i].sum()),
               "accepted": acc, "rejected": int(by_label[i, 1]), "open": int(by_label[i, 2])}
        if acc:
            rng = np.random.default_rng([seed, 97, int(c) % (2**31)])
            e = estimate_from_stats(stats, i, noise, credible=cfg.credible, rng=rng)
            low = estimate_from_stats(stats, i, noise, credible=conf, rng=rng)
            unaudited = any(v["audits"] == 0 for v in e.by_source.values())
            rec.update({"est_precision": e.mean, "est_precision_lo": e.lo, "est_precision_hi": e.hi,
                        "audits": e.n_audits, "certified_precision": None if unaudited else low.lo})
            if correct is not None:
                rec["true_precision"] = float(n_correct[i] / acc)
        classes.append(rec)
    return by_source, classes


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
        lines.append(f"estimated precision of accepted masks (audited): {ci}; "
                     f"{t.get('audit_questions', 0)} audit questions ({100 * t.get('audit_share', 0):.1f} %)")
    src = t.get("by_source") or {}
    parts = []
    for name, rec in src.items():
        if not rec.get("accepted"):
            continue
        e = rec.get("est")
        part = f"{name} {rec['accepted']}"
        part += f" at {e:.3f} [{rec['lo']:.3f}, {rec['hi']:.3f}]" if e is not None else " (not audited yet)"
        if rep["replay"] and rec.get("true_precision") is not None:
            part += f" (true {rec['true_precision']:.3f})"
        parts.append(part)
    if parts:
        lines.append("accepted by source: " + "; ".join(parts))
    if t.get("posterior_precision") is not None and not np.isnan(t.get("posterior_precision", np.nan)):
        lines.append(f"posterior estimate from the deciding answers (not audited): {t['posterior_precision']:.3f} "
                     f"[{t['posterior_precision_lo']:.3f}, {t['posterior_precision_hi']:.3f}]")
    if rep["replay"] and t.get("true_precision") is not None:
        lines.append(f"replay truth: precision {t['true_precision']:.3f}, mean IoU {t['mean_iou']:.3f}, "
                     f"recall {t['recall']:.3f}")
    if t.get("speedup"):
        lines.append(f"speedup against drawing polygons: {t['speedup']:.1f}x "
                     f"({t['manual_hours']:.2f} h by hand vs {t['worker_hours']:.2f} h of yes/no)")
    return "\n".join(lines)
