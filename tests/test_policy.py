import numpy as np
import pytest
from scipy import stats

from crowdprop.config import PolicySection
from crowdprop.policy.controller import (apply_decisions, decide, initial_status, label_sums, mask_status,
                                         node_mean, plan_round)
from crowdprop.policy.estimate import outcome_probabilities, paper_decision, sequential_decision
from crowdprop.quality import beta_interval
from crowdprop.schema import NODE_ACCEPTED, NODE_OPEN, NODE_REJECTED, NODE_SPLIT
from crowdprop.tree.build import build_forest


def test_beta_interval_matches_scipy():
    mean, lo, hi = beta_interval([13, 0], [2, 15], credible=0.9)
    assert mean[0] == pytest.approx(14 / 17)
    assert lo[0] == pytest.approx(stats.beta.ppf(0.05, 14, 3))
    assert hi[1] == pytest.approx(stats.beta.ppf(0.95, 1, 16))


def test_paper_rule_thresholds():
    d = paper_decision([13, 12.75, 3, 2, 8], [15, 15, 15, 15, 15], accept=0.85, reject=0.15)
    # 13/15 = 0.867 >= 0.85 accept; 12.75/15 = 0.85 accept (boundary); 3/15 = 0.2 split; 2/15 reject
    assert d.tolist() == ["accept", "accept", "split", "reject", "split"]


def test_deterministic_curtailment():
    # 3 "no" among the first answers: 13 yes out of 15 is impossible, so p_accept == 0.
    p_acc, p_rej = outcome_probabilities([2], [5], k=15, accept=0.85, reject=0.15)
    assert p_acc[0] == 0.0
    # 3 yes: at most 2 yes is impossible, so p_reject == 0.
    p_acc, p_rej = outcome_probabilities([3], [3], k=15, accept=0.85, reject=0.15)
    assert p_rej[0] == 0.0
    # Mixed answers: neither bar can be reached any more -> split now, with 6 questions not 15.
    assert sequential_decision([3], [6], k=15, accept=0.85, reject=0.15, confidence=0.95).tolist() == ["split"]


def test_predictive_probability_is_beta_binomial():
    # 5 yes of 5 under Beta(1, 1): remaining 10 labels ~ BetaBinomial(10, 6, 1); accept needs >= 8 more yes.
    p_acc, _ = outcome_probabilities([5], [5], k=15, accept=0.85, reject=0.15)
    assert p_acc[0] == pytest.approx(stats.betabinom.sf(7, 10, 6, 1))
    d = sequential_decision([5], [5], k=15, accept=0.85, reject=0.15, confidence=0.95)
    assert d.tolist() == (["accept"] if p_acc[0] >= 0.95 else ["wait"])
    assert sequential_decision([10], [10], k=15, accept=0.85, reject=0.15, confidence=0.95).tolist() == ["accept"]


def two_cluster_forest():
    """16 masks of one class in two tight groups of 8 (rows 0-7 and 8-15)."""
    emb = np.concatenate([np.zeros((8, 2)), np.full((8, 2), 10.0)]) + np.arange(16)[:, None] * 1e-3
    return build_forest(np.zeros(16, np.int64), emb.astype(np.float32), rng=np.random.default_rng(0))


def test_free_split_below_k_pa_and_sampling():
    f = two_cluster_forest()
    root = int(f.roots[0])
    quality = np.r_[np.full(8, 0.9), np.full(8, 0.3)]
    nq = node_mean(f, quality)
    assert nq[root] == pytest.approx(0.6)
    cfg = PolicySection(k=4, min_cluster_size=2, k_pa=0.7)
    status = initial_status(f)
    plan = plan_round(f, status, nq, np.full(16, np.nan), cfg, np.random.default_rng(1))
    assert plan.free_splits[0] == root  # 0.6 < K_pa: split without asking
    good = [c for c in f.children(root) if set(f.members(c)) == set(range(8))][0]
    assert good in plan.nodes and status[good] == NODE_OPEN
    rows = plan.asks[good]
    assert len(rows) == 4 and set(rows) <= set(range(8)) and len(set(rows)) == 4


def test_inherited_labels_reduce_questions_and_decide():
    f = two_cluster_forest()
    nq = np.full(f.n_nodes, 0.9)
    cfg = PolicySection(k=4, min_cluster_size=2)
    status = initial_status(f)
    label_p = np.full(16, np.nan)
    label_p[[0, 1, 2]] = 1.0  # three members already answered "yes"
    plan = plan_round(f, status, nq, label_p, cfg, np.random.default_rng(0))
    root = int(f.roots[0])
    assert len(plan.asks[root]) == 1  # k=4, 3 inherited
    label_p[plan.asks[root]] = 0.0
    dec = decide(f, np.array([root]), label_p, cfg, nq)
    assert dec["decision"].tolist() == ["split"]  # 3 of 4 = 0.75
    assert dec["n_labeled"].tolist() == [4] and dec["yes"].tolist() == [3.0]
    apply_decisions(f, status, dec)
    kids = f.children(root)
    assert status[root] == NODE_SPLIT and all(status[c] == NODE_OPEN for c in kids)


def test_mask_status_propagates_and_direct_labels_win():
    f = two_cluster_forest()
    status = initial_status(f)
    root = int(f.roots[0])
    a, b = f.children(root)
    status[root] = NODE_SPLIT
    status[a], status[b] = NODE_ACCEPTED, NODE_REJECTED
    label_p = np.full(16, np.nan)
    ma, mb = f.members(a), f.members(b)
    label_p[ma[0]] = 0.0  # a "no" inside an accepted cluster
    label_p[mb[0]] = 1.0  # a "yes" inside a rejected one
    out = mask_status(f, status, label_p)
    assert out[ma[0]] == 0 and out[mb[0]] == 1
    assert (out[ma[1:]] == 1).all() and (out[mb[1:]] == 0).all()


def test_label_sums_count_only_members():
    f = two_cluster_forest()
    label_p = np.full(16, np.nan)
    label_p[[0, 9, 10]] = [1.0, 0.0, 0.5]
    root = int(f.roots[0])
    n, y = label_sums(f, label_p, np.array([root, *f.children(root)]))
    assert n.tolist() == [3, 1, 2] or n.tolist() == [3, 2, 1]
    assert y[0] == 1.5


def test_stratified_sampling_covers_both_children():
    f = two_cluster_forest()
    cfg = PolicySection(k=6, min_cluster_size=2, sampling="stratified")
    plan = plan_round(f, initial_status(f), np.full(f.n_nodes, 0.9), np.full(16, np.nan), cfg,
                      np.random.default_rng(5))
    rows = plan.asks[int(f.roots[0])]
    assert len(rows) == 6 and (rows < 8).sum() == 3 and (rows >= 8).sum() == 3


def test_nested_free_splits_replay_to_the_planned_status():
    """Free splits recorded in one round (a node and its descendants) replay to the same status."""
    from crowdprop.policy.controller import apply_split

    emb = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    f = build_forest(np.zeros(64, np.int64), emb, rng=np.random.default_rng(0))
    quality = np.linspace(0.0, 1.0, 64)
    status = initial_status(f)
    cfg = PolicySection(k=4, min_cluster_size=4, k_pa=0.7)
    plan = plan_round(f, status, node_mean(f, quality), np.full(64, np.nan), cfg, np.random.default_rng(0))
    assert len(plan.free_splits) >= 3  # nested: the root, then its children, ...
    replayed = initial_status(f)
    apply_split(f, replayed, plan.free_splits)
    assert np.array_equal(replayed, status)
    assert (replayed[plan.free_splits] == NODE_SPLIT).all()


def run_oracle(forest, truth, cfg, seed=0):
    """Plan/decide rounds with answers from ``truth`` (perfect workers) until nothing is left."""
    from crowdprop.policy.controller import apply_decisions

    status = initial_status(forest)
    label_p = np.full(len(truth), np.nan)
    nq = np.full(forest.n_nodes, 0.9)
    asked = 0
    for r in range(200):
        plan = plan_round(forest, status, nq, label_p, cfg, np.random.default_rng([seed, r]))
        if not plan.nodes:
            break
        for rows in plan.asks.values():
            label_p[rows] = truth[rows]
            asked += len(rows)
        apply_decisions(forest, status, decide(forest, np.array(plan.nodes), label_p, cfg, nq))
    return asked, mask_status(forest, status, label_p)


def test_sequential_rule_asks_fewer_questions_for_the_same_verdicts():
    """Pure clusters, perfect answers: the sequential rule reaches the paper's verdicts
    (every mask labeled as its truth) with fewer questions."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20], [40, 40]], np.float32)
    emb = np.repeat(centers, 60, axis=0) + rng.normal(0, 0.5, (300, 2)).astype(np.float32)
    truth = np.repeat([1.0, 0.0, 1.0, 0.0, 1.0], 60)
    f = build_forest(np.zeros(300, np.int64), emb, rng=np.random.default_rng(0))
    paper_q, paper_status = run_oracle(f, truth, PolicySection(k_pa=0.0))
    seq_q, seq_status = run_oracle(f, truth, PolicySection(k_pa=0.0, name="sequential"))
    assert np.array_equal(paper_status, truth.astype(np.int8))
    assert np.array_equal(seq_status, paper_status)
    assert seq_q < paper_q
    # mixed clusters are split sooner: three yes and three no settle "split" at 6 answers
    mixed = sequential_decision([3], [6], k=15, accept=0.85, reject=0.15, confidence=0.95)
    assert mixed.tolist() == ["split"]


def test_label_sums_never_exceed_the_count_despite_rounding():
    """Sums over node ranges are differences of cumulative sums; with fractional labels their
    rounding could put yes a hair above n (a negative count of "no" in the Beta interval)."""
    from crowdprop.policy.controller import label_sums
    from crowdprop.tree.build import build_forest

    rng = np.random.default_rng(1)
    f = build_forest(np.zeros(2000, np.int64), rng.normal(size=(2000, 4)).astype(np.float32), rng=rng)
    p = rng.choice([0.1, 1 / 3, 1.0], size=2000)  # fractional: rounding in the cumsum (2 nodes of all-1.0
    p[::7] = np.nan                              # members came out a hair above their count before the clip)
    nodes = np.arange(f.n_nodes)
    n, yes = label_sums(f, p, nodes)
    assert (yes <= n).all() and (yes >= 0).all()
    exact = np.array([np.nansum(p[f.members(int(x))]) for x in nodes[:200]])
    np.testing.assert_allclose(yes[:200], exact, atol=1e-9)


def test_free_splits_looking_only_at_newly_opened_children_split_what_a_full_rescan_splits():
    """free_splits_and_candidates checks only the children it just opened after its first pass; a
    full rescan of every open node per level (the definition) splits the same nodes in the same
    order and leaves the same statuses, here over 5 classes with some nodes already decided."""
    from crowdprop.policy.controller import RoundPlan, apply_split, free_splits_and_candidates

    rng = np.random.default_rng(4)
    n = 600
    f = build_forest(rng.integers(0, 5, n).astype(np.int64), rng.normal(size=(n, 4)).astype(np.float32),
                     rng=np.random.default_rng(0))
    nq = node_mean(f, rng.random(n))
    cfg = PolicySection(k=4, min_cluster_size=6, k_pa=0.55)
    status = initial_status(f)
    apply_split(f, status, f.roots[:2])  # two classes a round further on
    reference = status.copy()
    size = f.end - f.start
    expected = []
    while True:
        open_ = np.flatnonzero(reference == NODE_OPEN)
        low = open_[(nq[open_] < cfg.k_pa) & (size[open_] > cfg.min_cluster_size) & (f.left[open_] >= 0)]
        if len(low) == 0:
            break
        apply_split(f, reference, low)
        expected.extend(low.tolist())
    plan = RoundPlan()
    free_splits_and_candidates(f, status, nq, cfg, plan)
    assert len(expected) > 20
    assert plan.free_splits == expected
    assert np.array_equal(status, reference)


def test_all_small_adds_every_small_open_node_beyond_the_cap_and_keeps_the_capped_choice():
    """The target policy's per-mask pool: with ``all_small`` every small open node of K_pa quality
    is a candidate, however many a class has; the capped best-first choice is kept as it was
    (large nodes stay capped), and a small node under K_pa is still skipped."""
    from crowdprop.policy.controller import RoundPlan, apply_split, free_splits_and_candidates

    rng = np.random.default_rng(5)
    n = 800
    f = build_forest(rng.integers(0, 2, n).astype(np.int64), rng.normal(size=(n, 4)).astype(np.float32),
                     rng=np.random.default_rng(0))
    nq = node_mean(f, 0.5 + 0.5 * rng.random(n))
    cfg = PolicySection(k=4, min_cluster_size=6, k_pa=0.7, candidates_per_class=5)
    size = f.end - f.start
    status = initial_status(f)
    for _ in range(6):  # open the trees a few levels down: many open nodes, small and large
        op = np.flatnonzero((status == NODE_OPEN) & (f.left >= 0) & (size > cfg.min_cluster_size))
        apply_split(f, status, op)
    capped = free_splits_and_candidates(f, status.copy(), nq, cfg, RoundPlan())
    s2 = status.copy()
    both = free_splits_and_candidates(f, s2, nq, cfg, RoundPlan(), all_small=True)
    open_ = np.flatnonzero(s2 == NODE_OPEN)
    small_ok = open_[((size[open_] <= cfg.min_cluster_size) | (f.left[open_] < 0)) & (nq[open_] >= cfg.k_pa)]
    per_class = np.bincount(f.category[small_ok], minlength=2)
    assert per_class.min() > cfg.candidates_per_class  # the cap would have left most of them out
    assert np.bincount(f.category[capped], minlength=2).max() <= cfg.candidates_per_class
    assert np.array_equal(both, np.union1d(capped, small_ok))
    big = both[(size[both] > cfg.min_cluster_size) & (f.left[both] >= 0)]
    assert np.isin(big, capped).all()
    low_small = open_[((size[open_] <= cfg.min_cluster_size) | (f.left[open_] < 0)) & (nq[open_] < cfg.k_pa)]
    assert len(low_small) and not np.isin(low_small, both).any()
