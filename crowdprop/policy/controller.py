"""Pure decisions of the propagation controller: which clusters to ask about, which
masks to sample, and what to do with a cluster once its answers are in.

Glossary
--------
forest : :class:`crowdprop.tree.Forest`
    ``m`` nodes over ``n`` masks; node ``j`` holds mask rows ``order[start[j]:end[j]]``.
status : (m,) int8 array of node status codes (``crowdprop.schema.NODE_*``)
    NODE_OPEN nodes are the frontier (candidates).
node_quality : (m,) float
    Mean predicted quality of a node's members.
label_p : (n,) float
    Per mask, the aggregated probability that it is correct, from the direct
    (non-gold) answers so far; NaN where the mask has none.

Nothing here touches disk or network; randomness comes from the generator passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import PolicySection
from ..quality.scores import beta_interval
from ..schema import (NODE_ACCEPTED, NODE_INACTIVE, NODE_OPEN, NODE_REJECTED, NODE_SPLIT, NODE_VERIFIED,
                      Decision)
from ..tree import Forest
from .estimate import WAIT as _WAIT
from .estimate import paper_decision, sequential_decision


def node_mean(forest: Forest, values: np.ndarray) -> np.ndarray:
    """Mean of a per-mask array over each node's members, ``(m,)``, via prefix sums."""
    v = np.asarray(values, dtype=np.float64)[forest.order]
    c = np.concatenate([[0.0], np.cumsum(v)])
    size = np.maximum(forest.end - forest.start, 1)
    return (c[forest.end] - c[forest.start]) / size


def label_sums(forest: Forest, label_p: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of labeled members and sum of their ``p`` for each node in ``nodes``."""
    p = np.asarray(label_p, dtype=np.float64)[forest.order]
    has = ~np.isnan(p)
    cn = np.concatenate([[0], np.cumsum(has)])
    cy = np.concatenate([[0.0], np.cumsum(np.where(has, p, 0.0))])
    s, e = forest.start[nodes], forest.end[nodes]
    n = (cn[e] - cn[s]).astype(np.float64)
    # differences of cumulative sums carry their rounding: a sum of yes a hair above n (or under 0)
    # would be a negative count of "no" answers downstream
    return n, np.clip(cy[e] - cy[s], 0.0, n)


def label_counts(forest: Forest, label_p: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Number of labeled members of each node in ``nodes`` (float, as the first array of
    :func:`label_sums`, which it equals exactly: counts are integers). When the nodes hold
    few members it counts only theirs, not a prefix sum over every mask (at 10M masks a
    candidate set or the verified clusters hold a small share of them)."""
    nodes = np.asarray(nodes, dtype=np.int64)
    s, e = forest.start[nodes], forest.end[nodes]
    sizes = (e - s).astype(np.int64)
    total = int(sizes.sum())
    n = len(forest.order)
    if total <= n // 4:
        off = np.concatenate([[0], np.cumsum(sizes)])
        pos = np.repeat(s.astype(np.int64) - off[:-1], sizes) + np.arange(total, dtype=np.int64)
        has = ~np.isnan(np.asarray(label_p, dtype=np.float64)[forest.order[pos]])
        c = np.concatenate([[0], np.cumsum(has, dtype=np.int64)])
        return (c[off[1:]] - c[off[:-1]]).astype(np.float64)
    has = ~np.isnan(np.asarray(label_p, dtype=np.float64))
    cn = np.concatenate([[0], np.cumsum(has[forest.order], dtype=np.int64)])
    return (cn[e] - cn[s]).astype(np.float64)


def predicted_quality(masks: pd.DataFrame, how: str) -> np.ndarray:
    """Per-mask predicted quality in [0, 1] (``PolicySection.quality``)."""
    score = masks["score"].to_numpy(np.float64)
    piou = masks["pred_iou"].to_numpy(np.float64)
    has_piou = bool(np.isfinite(piou).all()) and len(piou) > 0
    if how == "auto":
        # The geometric mean ranks masks exactly like score x pred_iou, on the [0, 1]
        # scale of a single quality estimate that K_pa is compared with.
        return np.sqrt(score * piou) if has_piou else score
    if how == "score":
        return score
    if not has_piou:
        from ..errors import InputError

        raise InputError("masks", None, "pred_iou", f"policy.quality = '{how}' needs a predicted IoU for every mask")
    return piou if how == "pred_iou" else score * piou


@dataclass
class RoundPlan:
    """What the controller wants from one round."""

    free_splits: list[int] = field(default_factory=list)
    """Nodes split without asking (predicted quality below K_pa)."""
    nodes: list[int] = field(default_factory=list)
    """Candidate nodes considered this round (asked about or decided from labels they already have)."""
    asks: dict[int, np.ndarray] = field(default_factory=dict)
    """node -> mask rows to ask about (may be empty: decided from inherited labels)."""

    @property
    def n_questions(self) -> int:
        return int(sum(len(v) for v in self.asks.values()))


def initial_status(forest: Forest) -> np.ndarray:
    status = np.full(forest.n_nodes, NODE_INACTIVE, dtype=np.int8)
    status[forest.roots] = NODE_OPEN
    return status


def _open_children(forest: Forest, status: np.ndarray, nodes: np.ndarray) -> None:
    for arr in (forest.left[nodes], forest.right[nodes]):
        arr = arr[arr >= 0]
        status[arr] = NODE_OPEN


def apply_split(forest: Forest, status: np.ndarray, nodes) -> None:
    """Split ``nodes`` (in place): their children become candidates.

    Children are opened before the nodes are marked, so a batch holding a node and
    its descendant (nested free splits of one round) ends with both split."""
    nodes = np.asarray(nodes, dtype=np.int64)
    if len(nodes):
        _open_children(forest, status, nodes)
        status[nodes] = NODE_SPLIT


def _sample_rows(forest: Forest, node: int, need: int, label_p: np.ndarray, cfg: PolicySection,
                 rng: np.random.Generator) -> np.ndarray:
    """Unlabeled member rows to ask about, uniform or stratified over the two children."""
    if need <= 0:
        return np.zeros(0, dtype=np.int64)
    if cfg.sampling == "stratified" and forest.left[node] >= 0:
        kids = [int(forest.left[node]), int(forest.right[node])]
        sizes = np.array([forest.end[c] - forest.start[c] for c in kids], dtype=np.float64)
        n_lab = label_counts(forest, label_p, np.array(kids))
        target_total = need + n_lab.sum()
        target = target_total * sizes / sizes.sum()
        base = np.floor(target).astype(int)
        rem = int(round(target_total)) - base.sum()
        if rem > 0:
            base[np.argsort(-(target - base), kind="stable")[:rem]] += 1
        want = np.maximum(base - n_lab.astype(int), 0)
        # Hand any shortfall (a child with too few unlabeled members) to the other child.
        out = []
        for c, w in zip(kids, want):
            out.append(_uniform(forest, c, int(w), label_p, rng))
        got = sum(len(o) for o in out)
        if got < need:
            taken = np.concatenate(out) if out else np.zeros(0, np.int64)
            extra = _uniform(forest, node, need - got, label_p, rng, exclude=taken)
            out.append(extra)
        return np.concatenate(out).astype(np.int64)
    return _uniform(forest, node, need, label_p, rng)


def _uniform(forest: Forest, node: int, need: int, label_p: np.ndarray, rng: np.random.Generator,
             exclude: np.ndarray | None = None) -> np.ndarray:
    if need <= 0:
        return np.zeros(0, dtype=np.int64)
    members = forest.order[forest.start[node]:forest.end[node]]
    free = members[np.isnan(label_p[members])]
    if exclude is not None and len(exclude):
        free = free[~np.isin(free, exclude)]
    if len(free) <= need:
        return np.sort(free).astype(np.int64)
    return np.sort(rng.choice(free, size=need, replace=False)).astype(np.int64)


def free_splits_and_candidates(forest: Forest, status: np.ndarray, node_quality: np.ndarray, cfg: PolicySection,
                               plan: RoundPlan, *, all_small: bool = False) -> np.ndarray:
    """Split open nodes under K_pa without asking (in place, recorded in ``plan.free_splits``),
    then return this round's candidates, sorted: best-first within each class (highest
    predicted quality, then larger, then node id), at most ``candidates_per_class`` each.

    ``all_small``: also every other small open node (at most ``min_cluster_size`` masks, or a
    leaf) of K_pa quality, beyond the cap: the target policy's per-mask pool, whose questions
    are rationed by ``active_share`` instead (capped, a campaign of 1M masks ends in hundreds
    of rounds of about a hundred questions)."""
    size = forest.end - forest.start
    # Free splits level by level; after the first pass only the children just opened can be new
    # low-quality open nodes, so each later pass looks at those alone (not every node again).
    frontier = np.flatnonzero(status == NODE_OPEN)
    while True:
        low = frontier[(node_quality[frontier] < cfg.k_pa) & (size[frontier] > cfg.min_cluster_size)
                       & (forest.left[frontier] >= 0)]
        if len(low) == 0:
            break
        apply_split(forest, status, low)
        plan.free_splits.extend(low.tolist())
        kids = np.concatenate([forest.left[low], forest.right[low]])
        kids = np.unique(kids[kids >= 0])
        frontier = kids[status[kids] == NODE_OPEN]
    open_ = np.flatnonzero(status == NODE_OPEN)
    if cfg.low_quality == "skip":
        open_ = open_[node_quality[open_] >= cfg.k_pa]
    if len(open_) == 0:
        return np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame({"node": open_, "cat": forest.category[open_], "q": node_quality[open_],
                          "size": size[open_]})
    frame = frame.sort_values(["cat", "q", "size", "node"], ascending=[True, False, False, True], kind="stable")
    chosen = frame.groupby("cat", sort=True).head(cfg.candidates_per_class)["node"].to_numpy()
    if all_small:
        small = open_[(size[open_] <= cfg.min_cluster_size) | (forest.left[open_] < 0)]
        chosen = np.union1d(chosen, small)
    return np.sort(chosen)


def plan_round(forest: Forest, status: np.ndarray, node_quality: np.ndarray, label_p: np.ndarray,
               cfg: PolicySection, rng: np.random.Generator) -> RoundPlan:
    """Choose this round's candidates (best-first per class) and the masks to ask about.

    ``status`` is updated in place for free splits (nodes whose predicted quality is
    below ``k_pa`` and which are larger than ``min_cluster_size``).
    """
    plan = RoundPlan()
    size = forest.end - forest.start
    chosen = free_splits_and_candidates(forest, status, node_quality, cfg, plan)
    if len(chosen) == 0:
        return plan
    n_lab = label_counts(forest, label_p, chosen)
    for node, have in zip(chosen.tolist(), n_lab.tolist()):
        sz = int(size[node])
        if sz <= cfg.min_cluster_size or forest.left[node] < 0:
            need = sz - int(have)  # verify every member
            rows = _uniform(forest, node, need, label_p, rng)
        else:
            target = min(cfg.k, sz)
            if cfg.name == "sequential":
                target = min(target, int(have) + cfg.batch)
            rows = _sample_rows(forest, node, target - int(have), label_p, cfg, rng)
        plan.nodes.append(node)
        plan.asks[node] = rows
    return plan


def decide(forest: Forest, nodes: np.ndarray, label_p: np.ndarray, cfg: PolicySection,
           node_quality: np.ndarray | None = None) -> pd.DataFrame:
    """Decide what happens to each candidate node given every label collected so far.

    Returns a DataFrame with one row per node: ``node_id, decision, n_labeled, yes,
    est_mean, est_lo, est_hi, quality`` (decision values are :class:`Decision` values).
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    n_lab, yes = label_sums(forest, label_p, nodes)
    size = (forest.end - forest.start)[nodes]
    mean, lo, hi = beta_interval(yes, n_lab - yes, prior_a=cfg.prior_a, prior_b=cfg.prior_b, credible=cfg.credible)
    small = (size <= cfg.min_cluster_size) | (forest.left[nodes] < 0)
    dec = np.full(len(nodes), _WAIT, dtype=object)
    # Small clusters and leaves: decided member by member once every member has a label.
    dec[small & (n_lab >= size)] = Decision.VERIFY.value
    big = ~small
    if np.any(big):
        target = np.minimum(cfg.k, size[big]).astype(np.float64)
        if cfg.name == "paper":
            d = paper_decision(yes[big], n_lab[big], accept=cfg.accept, reject=cfg.reject)
            d[n_lab[big] < target] = _WAIT
        else:
            d = sequential_decision(yes[big], n_lab[big], k=target, accept=cfg.accept, reject=cfg.reject,
                                    confidence=cfg.confidence, prior_a=cfg.prior_a, prior_b=cfg.prior_b)
            # A cluster smaller than k has run out of members to sample once all are labeled.
            full = n_lab[big] >= target
            d = np.where(full & (d == _WAIT),
                         paper_decision(yes[big], n_lab[big], accept=cfg.accept, reject=cfg.reject), d)
        dec[big] = d
    return pd.DataFrame({
        "node_id": nodes,
        "decision": dec.astype(str),
        "n_labeled": n_lab.astype(np.int64),
        "yes": yes,
        "est_mean": mean,
        "est_lo": lo,
        "est_hi": hi,
        "quality": node_quality[nodes] if node_quality is not None else np.nan,
    })


def apply_decisions(forest: Forest, status: np.ndarray, decisions: pd.DataFrame) -> None:
    """Move nodes to their new status (in place)."""
    nodes = decisions["node_id"].to_numpy(np.int64)
    d = decisions["decision"].to_numpy()
    status[nodes[d == Decision.ACCEPT.value]] = NODE_ACCEPTED
    status[nodes[d == Decision.REJECT.value]] = NODE_REJECTED
    status[nodes[d == Decision.VERIFY.value]] = NODE_VERIFIED
    status[nodes[d == Decision.REOPEN.value]] = NODE_OPEN
    apply_split(forest, status, nodes[d == Decision.SPLIT.value])


def _range_sum(forest: Forest, nodes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per position in tree order, the sum of ``values[i]`` over the nodes ``nodes[i]`` that hold it."""
    d = np.zeros(n + 1, dtype=np.int64)
    np.add.at(d, forest.start[nodes], values)
    np.add.at(d, forest.end[nodes], -values)
    return np.cumsum(d)[:n]


def mask_status(forest: Forest, status: np.ndarray, label_p: np.ndarray,
                verdict: np.ndarray | None = None) -> np.ndarray:
    """Final label of every mask row: 1 accepted, 0 rejected, -1 open.

    A mask answered directly keeps its own aggregated label (``p >= 0.5``); the
    others take the verdict of the accepted or rejected cluster that holds them,
    else the verifier's verdict (``verdict``: 1 / 0 / -1 none).
    """
    return mask_labels(forest, status, label_p, verdict)[0]


def mask_labels(forest: Forest, status: np.ndarray, label_p: np.ndarray, verdict: np.ndarray | None = None,
                node_round: np.ndarray | None = None, verdict_round: np.ndarray | None = None,
                direct_round: np.ndarray | None = None):
    """Final label, how it was decided and in which round, per mask row.

    Returns ``(final, source, decided_round)``: ``final`` as :func:`mask_status`;
    ``source`` 0 open, 1 cluster verdict, 2 verifier, 3 direct answer
    (:mod:`crowdprop.policy.audit`); ``decided_round`` from ``node_round`` (per node),
    ``verdict_round`` and ``direct_round`` (per mask), 0 where not given.
    """
    n = len(forest.order)
    acc = np.flatnonzero(status == NODE_ACCEPTED)
    rej = np.flatnonzero(status == NODE_REJECTED)
    # Coverage by accepted and rejected nodes and the sum of their rounds, in tree order, packed
    # into one code per position (round * 4 + 2 * rejected + accepted) and moved to mask rows
    # through forest.order once (a scatter over every mask is what costs here); then each later
    # source overrides the earlier one (verdict, then direct answer) in whole-array passes.
    code = (_range_sum(forest, acc, np.ones(len(acc), dtype=np.int64), n) > 0).astype(np.int64)
    code += 2 * (_range_sum(forest, rej, np.ones(len(rej), dtype=np.int64), n) > 0)
    if node_round is not None:
        dec = np.concatenate([acc, rej])
        code += 4 * _range_sum(forest, dec, node_round[dec].astype(np.int64), n)
    by_row = np.empty(n, dtype=np.int64)
    by_row[forest.order] = code
    cover = by_row & 3  # 0 none, 1 accepted, 2 rejected, 3 both (rejected wins)
    final = np.array([-1, 1, 0, 0], dtype=np.int8)[cover]
    source = (cover > 0).astype(np.int8)
    rnd = np.where(cover > 0, by_row >> 2, 0)
    if verdict is not None:
        # A cluster is sampled and decided on its members without a verdict, so a verdict
        # stands inside a decided cluster.
        has_v = verdict >= 0
        final = np.where(has_v, verdict, final).astype(np.int8, copy=False)
        source[has_v] = 2
        if verdict_round is not None:
            rnd = np.where(has_v, verdict_round, rnd).astype(np.int64, copy=False)
    p = np.asarray(label_p)
    direct = ~np.isnan(p)
    final = np.where(direct, p >= 0.5, final).astype(np.int8, copy=False)
    source[direct] = 3
    if direct_round is not None:
        rnd = np.where(direct, direct_round, rnd).astype(np.int64, copy=False)
    rnd[final < 0] = 0
    return final, source, rnd
