"""Risk-aware cluster decisions (crowdprop.policy.risk) on hand-built clusters."""
import numpy as np
import pandas as pd
import pytest

from crowdprop.policy.estimate import paper_decision
from crowdprop.policy.risk import (beta_excess, beta_shortfall, eb_priors, k_cap, more_answers, moment_prior,
                                   risk_decision)

KW = dict(target=0.9, reject=0.15, sens=0.95, spec=0.95, tol=0.01, k=15, min_answers=5, confidence=0.95, size_cap=100)


def test_shortfall_matches_numerical_integral():
    from scipy import integrate, stats

    for a, b, t in [(16, 1, 0.86), (5, 3, 0.7), (40, 2, 0.9)]:
        num = integrate.quad(lambda x: (t - x) * stats.beta.pdf(x, a, b), 0, t)[0]
        assert beta_shortfall(t, a, b) == pytest.approx(num, rel=1e-6, abs=1e-12)
        num2 = integrate.quad(lambda x: (x - t) * stats.beta.pdf(x, a, b), t, 1)[0]
        assert beta_excess(t, a, b) == pytest.approx(num2, rel=1e-6, abs=1e-12)


def test_large_cluster_is_not_accepted_on_k_answers_but_a_small_pure_one_is():
    size = np.array([20.0, 100_000.0])
    ones = np.ones(2)
    d = risk_decision(np.full(2, 15.0), np.full(2, 15.0), size, ones, ones, **KW)
    assert d.tolist() == ["accept", "wait"]
    # the paper's rule accepts both on the same 15 answers
    assert paper_decision(np.full(2, 15.0), np.full(2, 15.0), accept=0.85, reject=0.15).tolist() == ["accept"] * 2
    # the large cluster is asked for more at once, and accepted once they all say yes
    more = more_answers(np.full(2, 15.0), np.full(2, 15.0), size, ones, ones, target=0.9, sens=0.95, spec=0.95,
                        tol=0.01, k=15, batch=5, size_cap=100)
    assert more[0] == 5 and more[1] > 15
    n = 15 + more[1]
    assert risk_decision([n], [n], [100_000], [1], [1], **KW).tolist() == ["accept"]


def test_mixed_cluster_is_split_and_bad_one_rejected():
    d = risk_decision([9.0, 0.0], [15.0, 15.0], [500.0, 500.0], [1, 1], [1, 1], **KW)
    assert d.tolist() == ["split", "reject"]


def test_k_cap_grows_with_size():
    assert k_cap([10, 15, 30, 1000, 100_000], 15).tolist() == [10, 15, 30, 120, 210]


def _run_policy(theta, size, rng, decide):
    """Sequentially sample answers (95 % accurate workers) until each cluster is decided."""
    phi = theta * 0.95 + (1 - theta) * 0.05
    out = []
    for ph, sz in zip(phi, size):
        yes = n = 0.0
        while True:
            d = decide(yes, n, sz)
            if d[0] != "wait":
                out.append(d[0])
                break
            m = int(d[1])
            yes += rng.binomial(m, ph)
            n += m
    return np.array(out)


def test_winners_curse_the_risk_rule_holds_the_target_where_the_paper_rule_does_not():
    """Many large clusters of precision 0.7-1.0: the paper rule's 15 answers let lucky mixed
    clusters through, the risk rule keeps the accepted masks at the target."""
    rng = np.random.default_rng(0)
    c = 400
    theta = rng.uniform(0.60, 0.95, c)
    size = rng.integers(2_000, 50_000, c).astype(float)

    def paper(yes, n, sz):
        if n < 15:
            return ("wait", 15)
        return (paper_decision([yes], [n], accept=0.85, reject=0.15)[0], 0)

    def risk(yes, n, sz):
        d = risk_decision([yes], [n], [sz], [1], [1], **KW)[0]
        m = more_answers([yes], [n], [sz], [1], [1], target=0.9, sens=0.95, spec=0.95, tol=0.01, k=15, batch=5, size_cap=100)[0]
        return (d, m)

    dp = _run_policy(theta, size, np.random.default_rng(1), paper)
    dr = _run_policy(theta, size, np.random.default_rng(1), risk)
    prec = lambda d: float((theta * size)[d == "accept"].sum() / size[d == "accept"].sum())  # noqa: E731
    assert prec(dp) < 0.89  # the paper rule's accepted set falls short of 0.9
    assert prec(dr) >= 0.9
    # what it accepts is genuinely good; what is near the target is split (to look inside), not gambled on
    assert (dr == "accept").sum() >= 3
    assert theta[dr == "accept"].min() > 0.88


def test_empirical_bayes_prior_follows_the_decided_clusters():
    rng = np.random.default_rng(3)
    true = rng.beta(8, 2, 200)  # mean 0.8
    n = np.full(200, 20.0)
    yes = rng.binomial(20, true).astype(float)
    a, b = moment_prior(yes, n)
    assert a / (a + b) == pytest.approx(0.8, abs=0.03)
    hist = pd.DataFrame({"category_id": 1, "band": 2, "yes": yes, "n_labeled": n})
    groups = pd.DataFrame({"category_id": [1, 1, 2], "band": [2, 5, 2]})
    a0, b0 = eb_priors(hist, groups)
    # same class and band, same class other band (falls back to the class), another class (global)
    assert np.allclose(a0 / (a0 + b0), 0.8, atol=0.03)
    assert eb_priors(hist.iloc[:3], groups)[0].tolist() == [1.0, 1.0, 1.0]  # too few clusters: uniform


def test_no_gold_answered_yet_is_not_a_coin_flipping_crowd():
    """Before any gold is answered the crowd-noise prior says workers are right 80 % of the time.
    A flat prior (sensitivity = specificity = 0.5) made Youden's J zero and the yes-rate target
    0.5, so a 1,000-mask cluster at 13 of 15 "yes" was accepted as certainly above 0.90."""
    from crowdprop.campaign.evidence import crowd_noise, noise_means

    golds = pd.DataFrame({"mask_row": [1, 2], "label": [1, 0]})
    sens, spec = noise_means(crowd_noise(None, golds))
    assert (sens, spec) == (0.8, 0.8)
    kw = {**{k: v for k, v in KW.items() if k not in ("sens", "spec")}, "size_cap": 2000}  # the default cap
    args = ([13.0], [15.0], [1000.0], [1.0], [1.0])
    assert risk_decision(*args, sens=0.5, spec=0.5, **kw).tolist() == ["accept"]  # the old hazard
    assert risk_decision(*args, sens=sens, spec=spec, **kw).tolist() != ["accept"]
    # gold answers move it: 40 right and 2 wrong on each side
    ans = pd.DataFrame({"mask_row": [1] * 42 + [2] * 42, "label": [1] * 40 + [0] * 2 + [0] * 40 + [1] * 2,
                        "used": True, "is_gold": True})
    a_s, b_s, a_p, b_p = crowd_noise(ans, golds)
    assert (a_s, b_s, a_p, b_p) == (44.0, 3.0, 44.0, 3.0)


def test_first_round_prior_learns_from_the_clusters_asked_with_it():
    """In round 1 nothing was decided before: the empirical-Bayes prior comes from every cluster
    asked in the same round, so the one lucky 15-of-15 among 39 mixed clusters is not accepted
    (it is asked again), while with no prior at all it would be."""
    from crowdprop.config import PolicySection
    from crowdprop.policy.target import TargetContext, decide_target
    from crowdprop.tree.build import build_forest

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 8)) * 50
    emb = np.repeat(centres, 100, axis=0) + rng.normal(size=(4000, 8)) * 0.1
    f = build_forest(np.zeros(4000, np.int64), emb.astype(np.float32), rng=np.random.default_rng(0))
    size = f.end - f.start
    blobs = np.flatnonzero(size == 100)
    assert len(blobs) == 40
    label_p = np.full(4000, np.nan)
    for i, node in enumerate(blobs.tolist()):
        asked = f.members(node)[:15]
        label_p[asked] = 1.0 if i == 0 else (np.arange(15) < 8).astype(float)
    cfg = PolicySection(name="target")
    empty = pd.DataFrame({"category_id": [], "band": [], "yes": [], "n_labeled": []})
    ctx = TargetContext(0.95, 0.95, empty, np.full(4000, -1, np.int8), False, 0.01)
    d = decide_target(f, blobs, label_p, label_p, ctx, cfg, np.ones(f.n_nodes)).set_index("node_id")["decision"]
    assert d[blobs[0]] == "wait"
    assert (d[blobs[1:]] == "split").all()  # confidently between the bars: mixed
    # without the concurrent prior (the old behaviour: prior learned from nothing) it is accepted
    from crowdprop.policy.target import _cluster_decisions

    alone, *_ = _cluster_decisions(f, blobs[:1], label_p, label_p, ctx, cfg, concurrent=False)
    assert alone.tolist() == ["accept"]


def test_set_level_acceptance_spends_a_class_surplus_on_clusters_its_own_answers_cannot_certify():
    from crowdprop.policy.target import set_accept

    kw = dict(target=0.9, confidence=0.95, floor=0.8, size_cap=2000)
    dec = np.array(["wait", "split", "wait", "reject", "wait"], dtype=object)
    mean = np.array([0.86, 0.84, 0.78, 0.95, 0.85])
    sd = np.full(5, 0.05)
    size = np.array([100.0, 100.0, 100.0, 100.0, 5000.0])
    cat = np.array([1, 1, 1, 1, 1])
    ready = np.ones(5, dtype=bool)
    # no surplus: nothing is accepted on the set (each is under the target)
    assert set_accept(dec, mean, sd, size, cat, ready, {}, **kw).tolist() == dec.tolist()
    # 2,000 masks accepted at 0.98 (surplus 160 masks, tight): the two clusters over the floor
    # are accepted, best first; the one under the floor, the rejected one and the one over
    # size_cap are left as they were
    out = set_accept(dec, mean, sd, size, cat, ready, {1: (160.0, 40.0)}, **kw)
    assert out.tolist() == ["accept", "accept", "wait", "reject", "wait"]
    # a smaller surplus pays for the best cluster only (100 * (0.86 - 0.9) = -4 masks, then -6 more,
    # against 1.645 * sd of the set)
    out = set_accept(dec, mean, sd, size, cat, ready, {1: (14.0, 4.0)}, **kw)
    assert out.tolist() == ["accept", "split", "wait", "reject", "wait"]
    # the surplus is per class: another class's does not count
    assert set_accept(dec, mean, sd, size, cat, ready, {2: (1e6, 0.0)}, **kw).tolist() == dec.tolist()
    # not ready (too few answers): left waiting
    assert set_accept(dec, mean, sd, size, cat, np.zeros(5, dtype=bool), {1: (160.0, 40.0)}, **kw).tolist() \
        == dec.tolist()


def test_a_large_cluster_asked_nothing_this_round_does_not_wait():
    """The round's decisions learn their prior from the round's own clusters, the plan from the
    clusters decided before: a cluster the plan chose not to ask (its plan decision was made)
    could be told to wait at the end of the round, and then wait unasked for ever. It takes the
    plan's decision instead, and splits where that would wait too."""
    from crowdprop.config import PolicySection
    from crowdprop.policy.target import TargetContext, decide_target
    from crowdprop.tree.build import build_forest

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 8)) * 50
    emb = np.repeat(centres, 100, axis=0) + rng.normal(size=(4000, 8)) * 0.1
    f = build_forest(np.zeros(4000, np.int64), emb.astype(np.float32), rng=np.random.default_rng(0))
    blobs = np.flatnonzero((f.end - f.start) == 100)
    label_p = np.full(4000, np.nan)
    for i, node in enumerate(blobs.tolist()):
        m = f.members(node)
        if i == 0:
            label_p[m[:15]] = 1.0  # lucky: the concurrent prior says wait, the plan's accept
        elif i == 1:
            label_p[m[:3]] = 1.0  # too few answers: both priors say wait
        else:
            label_p[m[:15]] = (np.arange(15) < 8).astype(float)
    cfg = PolicySection(name="target")
    empty = pd.DataFrame({"category_id": [], "band": [], "yes": [], "n_labeled": []})
    ctx = TargetContext(0.95, 0.95, empty, np.full(4000, -1, np.int8), False, 0.01)

    def decide(asked):
        out = decide_target(f, blobs, label_p, label_p, ctx, cfg, np.ones(f.n_nodes), asked)
        return out.set_index("node_id")["decision"]

    d = decide(np.ones(len(blobs), bool))  # both were asked this round: more answers are coming
    assert d[blobs[0]] == "wait" and d[blobs[1]] == "wait"
    d = decide(np.zeros(len(blobs), bool))
    assert d[blobs[0]] == "accept"
    assert d[blobs[1]] == "split"
    assert (d[blobs[2:]] == "split").all()  # unchanged: these were decided anyway
