"""The ``target`` policy: accept as many masks as possible while the accepted set's
precision holds a target, with risk-aware cluster decisions and a learned verifier.

One round (pure; the round loop supplies the context and does the I/O):

plan
    free splits under K_pa on (learned) node quality; candidates best-first per class;
    each large candidate gets :func:`crowdprop.policy.risk.more_answers` new answers
    (none when its inherited answers already settle it); the unsettled members of a
    small candidate are asked one by one while no verifier is fitted, else they form
    the pool from which the loop picks active questions.
decide
    large candidates by :func:`crowdprop.policy.risk.risk_decision` with empirical-Bayes
    priors; a small candidate is VERIFY once each member has its own answer or a
    verifier verdict.

Glossary: see :mod:`crowdprop.policy.controller` (forest, status, label_p) and
:mod:`crowdprop.policy.risk` (phi, priors, shortfall).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import PolicySection
from ..schema import Decision
from ..tree import Forest
from .controller import RoundPlan, _uniform, free_splits_and_candidates, label_sums
from .risk import WAIT, depth_band, eb_priors, more_answers, noise_map, risk_decision


@dataclass
class TargetContext:
    """What the target policy knows besides the tree and the labels."""

    sens: float
    """Crowd sensitivity P(yes | correct), posterior mean from gold answers."""
    spec: float
    """Crowd specificity P(no | wrong)."""
    history: pd.DataFrame
    """Clusters decided by their answers in earlier rounds: category_id, band, yes, n_labeled."""
    verdict: np.ndarray
    """(n,) int8 verifier verdict per mask: 1 accept, 0 reject, -1 none."""
    fitted: bool = False
    """Whether a verifier is fitted this round (small clusters then feed the active pool)."""
    tol: float = 0.01
    """Risk tolerance per mask (the audits may lower it; see policy.risk.tolerance)."""
    slack: dict | None = None
    """Per class, ``(surplus, variance)`` of what it has accepted so far (:func:`class_slack`):
    room for clusters accepted on the class's set-level precision (:func:`set_accept`)."""


def settled_mask(label_p: np.ndarray, verdict: np.ndarray) -> np.ndarray:
    """Per mask: answered directly or given a verifier verdict."""
    return ~np.isnan(label_p) | (verdict >= 0)


def _unsettled_size(forest: Forest, nodes: np.ndarray, settled: np.ndarray) -> np.ndarray:
    s = settled.astype(np.float64)[forest.order]
    c = np.concatenate([[0.0], np.cumsum(s)])
    return (forest.end[nodes] - forest.start[nodes]) - (c[forest.end[nodes]] - c[forest.start[nodes]])


def _is_small(forest: Forest, nodes: np.ndarray, cfg: PolicySection) -> np.ndarray:
    return ((forest.end - forest.start)[nodes] <= cfg.min_cluster_size) | (forest.left[nodes] < 0)


def _cluster_decisions(forest: Forest, nodes: np.ndarray, label_p: np.ndarray, cluster_p: np.ndarray,
                       ctx: TargetContext, cfg: PolicySection, concurrent: bool = False):
    """Risk decisions of large candidates from the answers they have: (decision, yes, n, a0, b0, size).

    ``concurrent``: the empirical-Bayes prior also learns from the candidates' own answers
    (every cluster asked in the same round), not only from the clusters decided before:
    in a campaign's first round nothing was decided before, and a prior learned from none
    would let the luckiest of hundreds of mixed clusters look pure."""
    settled = settled_mask(label_p, ctx.verdict)
    n_lab, yes = label_sums(forest, cluster_p, nodes)
    size = _unsettled_size(forest, nodes, settled)
    history = ctx.history
    if concurrent:
        asked = n_lab > 0
        now = pd.DataFrame({"category_id": forest.category[nodes[asked]],
                            "band": depth_band(forest.depth[nodes[asked]]),
                            "yes": yes[asked], "n_labeled": n_lab[asked]})
        history = now if history is None or len(history) == 0 else pd.concat([history, now], ignore_index=True)
    groups = pd.DataFrame({"category_id": forest.category[nodes], "band": depth_band(forest.depth[nodes])})
    a0, b0 = eb_priors(history, groups)
    dec = risk_decision(yes, n_lab, size, a0, b0, target=cfg.target_precision, reject=cfg.reject,
                        sens=ctx.sens, spec=ctx.spec, tol=ctx.tol, k=cfg.k, min_answers=cfg.batch,
                        confidence=cfg.target_confidence, size_cap=cfg.risk_size_cap)
    return dec, yes, n_lab, a0, b0, size


DIRECT_PRECISION = 0.97
"""Precision assumed for masks accepted on their own answers when counting a class's surplus
(the audits measure it; 95 % workers with one answer per mask give about this)."""


def class_slack(forest: Forest, status: np.ndarray, final: np.ndarray, source: np.ndarray,
                decisions: pd.DataFrame | None, verdict_p: np.ndarray | None, category: np.ndarray,
                target: float, credible: float) -> dict[int, tuple[float, float]]:
    """Per class, the accepted set's surplus over the target in masks, ``sum(theta - target)``,
    and its variance: accepted clusters count with the posterior mean and spread of their
    verdict (the masks of one cluster move together), verifier accepts with their calibrated
    probability, direct accepts with :data:`DIRECT_PRECISION`."""
    from scipy import stats

    from .audit import CLUSTER, DIRECT, VERIFIER
    from .controller import NODE_ACCEPTED

    acc = final == 1
    sur = np.zeros(len(final))
    var = np.zeros(len(final))
    if verdict_p is not None:
        v = acc & (source == VERIFIER)
        p = np.nan_to_num(verdict_p[v], nan=target)
        sur[v] = p - target
        var[v] = p * (1 - p)
    d = acc & (source == DIRECT)
    sur[d] = DIRECT_PRECISION - target
    var[d] = DIRECT_PRECISION * (1 - DIRECT_PRECISION)
    cats, inv = np.unique(category, return_inverse=True)
    tot_s = np.bincount(inv, weights=sur, minlength=len(cats))
    tot_v = np.bincount(inv, weights=var, minlength=len(cats))
    nodes = np.flatnonzero(status == NODE_ACCEPTED)
    if len(nodes) and decisions is not None and len(decisions):
        last = decisions[decisions["decision"] == Decision.ACCEPT.value].drop_duplicates("node_id", keep="last")
        last = last.set_index("node_id").reindex(nodes)
        z = stats.norm.ppf(0.5 + credible / 2.0)
        # a paper-policy decision (no posterior on the theta scale) counts at the target, unknown spread
        mean = np.nan_to_num(last["est_mean"].to_numpy(np.float64), nan=target)
        sd = np.nan_to_num((last["est_hi"].to_numpy(np.float64) - last["est_lo"].to_numpy(np.float64)) / (2 * z),
                           nan=0.1)
        # the masks each accepted cluster labels itself (not its direct answers or verifier verdicts)
        cs = np.concatenate([[0.0], np.cumsum((acc & (source == CLUSTER))[forest.order])])
        n_i = cs[forest.end[nodes]] - cs[forest.start[nodes]]
        ci = np.searchsorted(cats, forest.category[nodes])
        np.add.at(tot_s, ci, n_i * (mean - target))
        np.add.at(tot_v, ci, (n_i * sd) ** 2)  # the masks of one cluster move together
    return {int(c): (float(s_), float(v_)) for c, s_, v_ in zip(cats, tot_s, tot_v)}


def set_accept(dec: np.ndarray, mean: np.ndarray, sd: np.ndarray, size: np.ndarray, category: np.ndarray,
               ready: np.ndarray, slack: dict, *, target: float, confidence: float, floor: float,
               size_cap: float) -> np.ndarray:
    """Clusters accepted on their class's set-level precision: per class, best first, a cluster
    that waits or would be split is accepted when the class's accepted set with it keeps a
    lower bound at ``confidence`` over ``target`` (surplus at least z times its standard
    deviation) and its own estimated precision is at least ``floor``. Clusters the rule
    itself accepts count first. Only clusters of at most ``size_cap`` masks (larger ones
    need their own evidence: policy.risk). Returns the updated decisions."""
    from scipy import stats

    from .risk import ACCEPT, REJECT

    out = dec.copy()
    z = float(stats.norm.ppf(confidence))
    for c in np.unique(category).tolist():
        sur, var = slack.get(int(c), (0.0, 0.0))
        idx = np.flatnonzero(category == c)
        acc_now = idx[out[idx] == ACCEPT]
        sur += float((size[acc_now] * (mean[acc_now] - target)).sum())
        var += float(((size[acc_now] * sd[acc_now]) ** 2).sum())
        cand = idx[(out[idx] != ACCEPT) & (out[idx] != REJECT) & ready[idx] & (mean[idx] >= floor)
                   & (size[idx] <= size_cap)]
        for i in cand[np.argsort(-mean[cand], kind="stable")].tolist():
            s2 = sur + size[i] * (mean[i] - target)
            v2 = var + (size[i] * sd[i]) ** 2
            if s2 >= z * np.sqrt(v2):
                out[i] = ACCEPT
                sur, var = s2, v2
    return out


def plan_target(forest: Forest, status: np.ndarray, node_quality: np.ndarray, label_p: np.ndarray,
                cluster_p: np.ndarray, ctx: TargetContext, cfg: PolicySection,
                rng: np.random.Generator) -> tuple[RoundPlan, np.ndarray]:
    """Plan a round of the target policy. Returns the plan and the active pool (mask rows).

    ``status`` is updated in place for free splits.
    """
    plan = RoundPlan()
    pool: list[np.ndarray] = []
    # with a verifier, small candidates only feed the active pool (rationed by active_share)
    chosen = free_splits_and_candidates(forest, status, node_quality, cfg, plan, all_small=ctx.fitted)
    if len(chosen) == 0:
        return plan, np.zeros(0, dtype=np.int64)
    settled = settled_mask(label_p, ctx.verdict)
    free_of = np.where(settled, 0.0, np.nan)  # _uniform samples members whose value is NaN
    small = _is_small(forest, chosen, cfg)
    big_nodes = chosen[~small]
    if len(big_nodes):
        dec, yes, n_lab, a0, b0, usize = _cluster_decisions(forest, big_nodes, label_p, cluster_p, ctx, cfg)
        more = more_answers(yes, n_lab, usize, a0, b0, target=cfg.target_precision, sens=ctx.sens, spec=ctx.spec,
                            tol=ctx.tol, k=cfg.k, batch=cfg.batch, size_cap=cfg.risk_size_cap)
        for node, d, m in zip(big_nodes.tolist(), dec, more.tolist()):
            plan.nodes.append(node)
            plan.asks[node] = _uniform(forest, node, int(m) if d == WAIT else 0, free_of, rng)
    for node in chosen[small].tolist():
        members = forest.order[forest.start[node]:forest.end[node]]
        todo = np.sort(members[~settled[members]])
        plan.nodes.append(node)
        if ctx.fitted:
            pool.append(todo)
            plan.asks[node] = np.zeros(0, dtype=np.int64)
        else:
            plan.asks[node] = todo.astype(np.int64)
    plan.nodes.sort()
    return plan, (np.sort(np.concatenate(pool)).astype(np.int64) if pool else np.zeros(0, dtype=np.int64))


def decide_target(forest: Forest, nodes: np.ndarray, label_p: np.ndarray, cluster_p: np.ndarray,
                  ctx: TargetContext, cfg: PolicySection, node_quality: np.ndarray,
                  asked: np.ndarray | None = None) -> pd.DataFrame:
    """Decisions for the round's candidates, in the columns of :func:`controller.decide`.

    ``est_mean/lo/hi`` are the posterior of the cluster's precision (theta), worker error removed.

    ``asked``: per node, whether the round's plan asked it anything. A large cluster the plan
    asked nothing cannot wait (waiting means more answers, and its plan gave it none, so it
    would wait unasked round after round): it is decided as the plan decides, on the prior of
    the clusters decided before (with the crowd's noise as it stands now), and splits where that
    too would wait. The two priors can differ: the round's decisions learn theirs from this
    round's clusters as well.
    """
    from scipy import stats

    nodes = np.asarray(nodes, dtype=np.int64)
    out = np.full(len(nodes), WAIT, dtype=object)
    n_out = np.zeros(len(nodes))
    y_out = np.zeros(len(nodes))
    mean = np.full(len(nodes), np.nan)
    lo = np.full(len(nodes), np.nan)
    hi = np.full(len(nodes), np.nan)
    small = _is_small(forest, nodes, cfg)
    settled = settled_mask(label_p, ctx.verdict)
    if small.any():
        left = _unsettled_size(forest, nodes[small], settled)
        out[small] = np.where(left <= 0, Decision.VERIFY.value, WAIT)
        n_lab, yes = label_sums(forest, cluster_p, nodes[small])
        n_out[small], y_out[small] = n_lab, yes
    big = ~small
    if big.any():
        dec, yes, n_lab, a0, b0, size = _cluster_decisions(forest, nodes[big], label_p, cluster_p, ctx, cfg,
                                                           concurrent=True)
        n_out[big], y_out[big] = n_lab, yes
        a, b = a0 + yes, b0 + (n_lab - yes)
        _, j = noise_map(cfg.target_precision, ctx.sens, ctx.spec)
        off = 1.0 - ctx.spec
        tail = (1.0 - cfg.credible) / 2.0
        mean[big] = np.clip((a / (a + b) - off) / j, 0, 1)
        lo[big] = np.clip((stats.beta.ppf(tail, a, b) - off) / j, 0, 1)
        hi[big] = np.clip((stats.beta.ppf(1 - tail, a, b) - off) / j, 0, 1)
        if ctx.slack is not None and cfg.accept_floor < 1.0:
            sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0))) / j
            ready = n_lab >= np.minimum(cfg.batch, size)
            dec = set_accept(dec, mean[big], sd, size, forest.category[nodes[big]], ready, ctx.slack,
                             target=cfg.target_precision, confidence=cfg.target_confidence,
                             floor=cfg.accept_floor, size_cap=cfg.risk_size_cap)
        if asked is not None:
            stuck = (dec == WAIT) & ~np.asarray(asked, dtype=bool)[big]
            if stuck.any():
                b_nodes = nodes[big][stuck]
                plan_dec = _cluster_decisions(forest, b_nodes, label_p, cluster_p, ctx, cfg)[0]
                dec = dec.copy()
                dec[stuck] = np.where(plan_dec == WAIT, Decision.SPLIT.value, plan_dec)
        out[big] = dec
    return pd.DataFrame({"node_id": nodes, "decision": out.astype(str), "n_labeled": n_out.astype(np.int64),
                         "yes": y_out, "est_mean": mean, "est_lo": lo, "est_hi": hi,
                         "quality": node_quality[nodes]})


def decided_history(forest: Forest, decisions: pd.DataFrame) -> pd.DataFrame:
    """Clusters decided by their answers so far (the empirical-Bayes prior's data)."""
    if decisions is None or len(decisions) == 0:
        return pd.DataFrame({"category_id": pd.Series(dtype=np.int64), "band": pd.Series(dtype=np.int64),
                             "yes": pd.Series(dtype=np.float64), "n_labeled": pd.Series(dtype=np.float64)})
    d = decisions[~decisions["free"].astype(bool)
                  & decisions["decision"].isin([Decision.ACCEPT.value, Decision.REJECT.value, Decision.SPLIT.value])
                  & (decisions["n_labeled"] > 0)]
    nodes = d["node_id"].to_numpy(np.int64)
    return pd.DataFrame({"category_id": forest.category[nodes], "band": depth_band(forest.depth[nodes]),
                         "yes": d["yes"].to_numpy(np.float64), "n_labeled": d["n_labeled"].to_numpy(np.float64)})
