"""Audits (crowdprop.policy.audit): sampling design and the design-based estimator."""
import numpy as np
import pandas as pd
import pytest

from crowdprop.policy.audit import (CLUSTER, DIRECT, VERIFIER, audited_precision, plan_audits, valid_audits)


def _population(rng, n=20_000):
    """Masks decided in round 1 by three sources with different true precisions."""
    source = rng.choice([CLUSTER, VERIFIER, DIRECT], size=n, p=[0.6, 0.3, 0.1]).astype(np.int8)
    final = np.where(rng.random(n) < 0.85, 1, 0).astype(np.int8)
    p_true = np.select([source == CLUSTER, source == VERIFIER], [0.82, 0.93], 0.97)
    truth = (rng.random(n) < p_true).astype(int)
    decided = np.ones(n, dtype=np.int64)
    return final, source, decided, truth


def _answers_for(audits, truth, rng, sens=0.95, spec=0.95):
    t = truth[audits["mask_row"].to_numpy()]
    yes = np.where(t == 1, rng.random(len(t)) < sens, rng.random(len(t)) < 1 - spec).astype(int)
    return pd.DataFrame({"round": audits["round"].to_numpy(), "mask_row": audits["mask_row"].to_numpy(),
                         "label": yes, "used": True, "kind": "audit", "is_gold": False})


def test_plan_audits_draws_from_the_previous_rounds_decisions_in_proportion():
    rng = np.random.default_rng(0)
    final, source, decided, _ = _population(rng)
    decided[:5000] = 2  # decided in round 2: not in round 2's frame
    a = plan_audits(final, source, decided, round_=2, budget=400, min_per_stratum=3, rng=np.random.default_rng(1))
    assert (decided[a["mask_row"]] == 1).all()
    assert a["mask_row"].is_unique
    # every stratum's weights add up to its frame size
    for (s, lab), g in a.groupby(["source", "label"]):
        frame = ((decided == 1) & (source == s) & (final == lab)).sum()
        assert g["weight"].sum() == pytest.approx(frame)
        assert (final[g["mask_row"]] == lab).all() and (source[g["mask_row"]] == s).all()
    acc = a[a["label"] == 1]
    rej = a[a["label"] == 0]
    assert len(acc) > 3 * len(rej)  # rejected masks are audited at a lower rate
    assert not ((a["source"] == DIRECT) & (a["label"] == 0)).any()


def test_audited_estimate_is_unbiased_and_its_interval_covers():
    rng = np.random.default_rng(5)
    final, source, decided, truth = _population(rng)
    true_prec = truth[final == 1].mean()
    est, cover = [], 0
    noise = (1 + 950, 1 + 50, 1 + 950, 1 + 50)  # golds say sens = spec = 0.95
    reps = 200
    for i in range(reps):
        r = np.random.default_rng(100 + i)
        a = plan_audits(final, source, decided, round_=2, budget=300, min_per_stratum=3, rng=r)
        ans = _answers_for(a, truth, r)
        ok = valid_audits(a, ans, final, source, decided)
        e = audited_precision(final, source, ok, noise, rng=r, draws=2000)
        est.append(e.mean)
        cover += e.lo <= true_prec <= e.hi
    assert np.mean(est) == pytest.approx(true_prec, abs=0.006)
    assert cover / reps >= 0.9


def test_unaudited_source_widens_the_interval_and_changed_masks_drop_out():
    rng = np.random.default_rng(2)
    final, source, decided, truth = _population(rng)
    a = plan_audits(final, source, decided, round_=2, budget=300, min_per_stratum=3, rng=rng)
    ans = _answers_for(a, truth, rng)
    ok = valid_audits(a, ans, final, source, decided)
    noise = (96.0, 6.0, 96.0, 6.0)
    full = audited_precision(final, source, ok, noise, rng=np.random.default_rng(0))
    no_verifier = audited_precision(final, source, ok[ok["source"] != VERIFIER], noise, rng=np.random.default_rng(0))
    assert no_verifier.by_source["verifier"]["audits"] == 0
    assert (no_verifier.hi - no_verifier.lo) > 2 * (full.hi - full.lo)
    # a mask re-decided after its audit no longer counts
    moved = final.copy()
    moved[ok["mask_row"].to_numpy()[:10]] = -1
    assert len(valid_audits(a, ans, moved, source, decided)) == len(ok) - 10


def test_short_classes_are_those_whose_audits_put_them_under_the_target():
    """Three classes of accepted masks: one at 0.70 (short), one at 0.97 (fine), one at 0.70 with
    too few audits to act on; only the first is reported, with its audited estimate."""
    from crowdprop.policy.audit import short_classes

    rng = np.random.default_rng(3)
    n = 9000
    category = np.repeat([1, 2, 3], 3000)
    final = np.ones(n, dtype=np.int8)
    source = np.full(n, CLUSTER, dtype=np.int8)
    decided = np.ones(n, dtype=np.int64)
    truth = (rng.random(n) < np.select([category == 2], [0.97], 0.70)).astype(int)
    a = plan_audits(final, source, decided, round_=2, budget=400, min_per_stratum=3, rng=rng)
    a = a[(category[a["mask_row"]] != 3) | (np.arange(len(a)) % 40 == 0)]  # class 3: a handful
    ok = valid_audits(a, _answers_for(a, truth, rng), final, source, decided)
    assert (category[ok["mask_row"]] == 3).sum() < 10
    noise = (96.0, 6.0, 96.0, 6.0)
    out = short_classes(final, source, ok, noise, category, [1, 2, 3], target=0.9, confidence=0.95, min_audits=10,
                        rng=np.random.default_rng(0))
    assert [c for c, _ in out] == [1]
    assert abs(out[0][1].mean - 0.70) < 0.1 and out[0][1].hi < 0.9
    # with the bar lowered to 0.6 no class is short
    assert short_classes(final, source, ok, noise, category, [1, 2, 3], target=0.6, confidence=0.95, min_audits=10,
                         rng=np.random.default_rng(0)) == []


def test_acting_on_the_controlling_audits_leaves_the_estimating_ones_unbiased():
    """A policy that re-opens every cluster with an audit saying no, then estimates from the
    audits left, overstates what stays accepted (the lucky clusters' audits stay); with roles,
    what the controls remove is independent of the estimating audits, which stay unbiased."""
    from crowdprop.policy.audit import audit_roles, control_role

    rng = np.random.default_rng(3)
    n_clusters, size = 400, 50
    n = n_clusters * size
    cluster = np.repeat(np.arange(n_clusters), size)
    theta = np.where(rng.random(n_clusters) < 0.3, 0.70, 0.96)
    truth = (rng.random(n) < theta[cluster]).astype(int)
    source = np.full(n, CLUSTER, dtype=np.int8)
    decided = np.ones(n, dtype=np.int64)
    noise = (1 + 950, 1 + 50, 1 + 950, 1 + 50)
    naive_err, split_err, shares = [], [], []
    for i in range(150):
        r = np.random.default_rng(1000 + i)
        final = np.ones(n, dtype=np.int8)
        a = plan_audits(final, source, decided, round_=2, budget=600, min_per_stratum=3, rng=r)
        ans = _answers_for(a, truth, r)
        ok = valid_audits(a, ans, final, source, decided)
        shares.append(control_role(ok["round"], ok["mask_row"]).mean())

        def act(used):
            f = final.copy()
            said_no = np.unique(cluster[used.loc[used["yes"] < 0.5, "mask_row"].to_numpy(np.int64)])
            f[np.isin(cluster, said_no)] = -1
            return f

        f_naive = act(ok)
        e = audited_precision(f_naive, source, valid_audits(a, ans, f_naive, source, decided), noise, rng=r, draws=500)
        naive_err.append(e.mean - truth[f_naive == 1].mean())
        est_half, ctl_half = audit_roles(ok, True)
        f_split = act(ctl_half)
        still = valid_audits(a, ans, f_split, source, decided)
        e = audited_precision(f_split, source, audit_roles(still, True)[0], noise, rng=r, draws=500)
        split_err.append(e.mean - truth[f_split == 1].mean())
    assert np.mean(shares) == pytest.approx(1 / 3, abs=0.03)
    assert np.mean(naive_err) > 0.03
    assert abs(np.mean(split_err)) < 0.008


def test_audit_roles_keep_each_strata_weight_and_a_policy_that_never_acts_estimates_from_all():
    from crowdprop.policy.audit import audit_roles

    rng = np.random.default_rng(0)
    final, source, decided, truth = _population(rng)
    a = plan_audits(final, source, decided, round_=2, budget=900, min_per_stratum=3, rng=rng)
    ok = valid_audits(a, _answers_for(a, truth, rng), final, source, decided)
    est, ctl = audit_roles(ok, True)
    assert len(est) + len(ctl) == len(ok) and len(ctl) > 0
    assert not set(est["mask_row"]) & set(ctl["mask_row"])
    for part in (est, ctl):
        for (s, lab), g in part.groupby(["source", "label"]):
            assert g["weight"].sum() == pytest.approx(ok[(ok["source"] == s) & (ok["label"] == lab)]["weight"].sum())
    same, none = audit_roles(ok, False)
    assert len(same) == len(ok) and len(none) == 0
    # the same audit gets the same role every time (a resumed campaign and the report agree)
    assert audit_roles(ok.iloc[::-1], True)[1]["mask_row"].sort_values().tolist() == sorted(ctl["mask_row"])


def test_later_rounds_top_up_the_strata_an_early_round_audited_too_little():
    """Round 1 decided 6,000 masks and got 6 audits (its few questions set a small budget); round 2
    decided 2,000 and none were audited yet. Round 3's 300 audits go mostly to round 1's strata,
    in proportion to how far each is under its share, never to a mask audited before, with at
    least ``min_per_stratum`` for each stratum of round 2."""
    rng = np.random.default_rng(4)
    n = 8000
    decided = np.where(np.arange(n) < 6000, 1, 2).astype(np.int64)
    source = np.full(n, CLUSTER, dtype=np.int8)
    source[6000:] = VERIFIER
    final = np.ones(n, dtype=np.int8)
    early = plan_audits(final, source, decided, round_=2, budget=6, min_per_stratum=3, rng=rng)
    early = early[early["decided_round"] == 1]
    assert len(early) == 6
    a = plan_audits(final, source, decided, round_=3, budget=300, min_per_stratum=3, rng=rng, audited=early)
    per = a.groupby("decided_round").size()
    # shares: 6,000 / 8,000 of (6 + 300) audits is 229.5 for round 1, less the 6 it has
    assert per[1] == pytest.approx(229.5 - 6, abs=1) and per[2] == pytest.approx(76.5, abs=1)
    assert not set(a["mask_row"]) & set(early["mask_row"])
    # weights: each round's stratum now, over the audits drawn from it this round
    assert a.loc[a["decided_round"] == 1, "weight"].iloc[0] == pytest.approx(6000 / per[1])
    # ten more: each stratum's share of 316 less what it has (237 - 230 and 79 - 76)
    more = plan_audits(final, source, decided, round_=3, budget=10, min_per_stratum=3, rng=rng,
                       audited=pd.concat([early, a]))
    assert more.groupby("decided_round").size().to_dict() == {1: 7, 2: 3}
    # a stratum over its share gets nothing once it is no longer the newest (no minimum then)
    extra = plan_audits(final, source, np.where(decided == 2, 2, 9), round_=3, budget=200, min_per_stratum=3, rng=rng)
    later = plan_audits(final, source, decided, round_=4, budget=50, min_per_stratum=3, rng=rng,
                        audited=pd.concat([early, a, extra]))
    assert later.groupby("decided_round").size().to_dict() == {1: 50}


def test_a_stratum_the_controls_thinned_speaks_only_for_the_masks_it_still_has():
    """Round 1 accepted 10,000 masks at 0.70 and round 2 another 10,000 at 0.98, each audited 200
    times. The controls then re-open 90 % of round 1's masks (independently of the audits that
    estimate). Weighted by the strata's size when drawn, round 1 would still count as half the
    accepted set (estimate about 0.84); weighted by their size now it counts as a tenth (0.95)."""
    n = 20_000
    decided = np.repeat([1, 2], 10_000).astype(np.int64)
    source = np.full(n, CLUSTER, dtype=np.int8)
    noise = (1 + 950, 1 + 50, 1 + 950, 1 + 50)
    est = []
    truths = []
    for i in range(100):
        rng = np.random.default_rng(50 + i)
        truth = (rng.random(n) < np.where(decided == 1, 0.70, 0.98)).astype(int)
        final = np.ones(n, dtype=np.int8)
        a = pd.concat([plan_audits(final, source, np.where(decided == 1, 1, 9), round_=2, budget=200,
                                   min_per_stratum=3, rng=rng),
                       plan_audits(final, source, np.where(decided == 2, 2, 9), round_=3, budget=200,
                                   min_per_stratum=3, rng=rng)])
        ans = _answers_for(a, truth, rng)
        gone = (decided == 1) & (rng.random(n) < 0.9)
        final[gone] = -1
        ok = valid_audits(a, ans, final, source, decided)
        n_ok = ok.groupby("decided_round").size()
        assert ok.groupby("decided_round")["weight"].first().to_dict() == pytest.approx(
            {1: (~gone[:10_000]).sum() / n_ok[1], 2: 10_000 / n_ok[2]})
        est.append(audited_precision(final, source, ok, noise, rng=rng, draws=500).mean)
        truths.append(truth[final == 1].mean())
    assert np.mean(truths) == pytest.approx(0.953, abs=0.005)
    assert np.mean(est) == pytest.approx(np.mean(truths), abs=0.005)


def test_a_source_near_one_on_few_audits_does_not_pull_the_estimate_down():
    """Accepted masks from two sources: 3,000 direct ones at 0.98 with 30 audits and 3,000 cluster
    ones at 0.85 with 120. With 5 % worker error the direct source's corrected yes-rate is over 1 in
    about a third of the samples, so its shown estimate, clipped to [0, 1], is most of a point under
    its truth on average (-0.0075 over these seeds); summed before clipping, the accepted set's
    estimate is unbiased (+0.003) and the interval covers (97 %)."""
    n = 6000
    source = np.repeat([DIRECT, CLUSTER], 3000).astype(np.int8)
    decided = np.ones(n, dtype=np.int64)
    final = np.ones(n, dtype=np.int8)
    noise = (1 + 950, 1 + 50, 1 + 950, 1 + 50)
    err, clipped, cover = [], [], 0
    for i in range(300):
        rng = np.random.default_rng(900 + i)
        truth = (rng.random(n) < np.where(source == DIRECT, 0.98, 0.85)).astype(int)
        a = pd.concat([plan_audits(final, np.where(source == s, s, 0), decided, round_=2, budget=b, min_per_stratum=3,
                                   rng=rng) for s, b in ((DIRECT, 30), (CLUSTER, 120))])
        ok = valid_audits(a, _answers_for(a, truth, rng), final, source, decided)
        e = audited_precision(final, source, ok, noise, rng=np.random.default_rng(i), draws=2000)
        t = truth.mean()
        err.append(e.mean - t)
        src = e.by_source
        assert 0 <= src["direct"]["est"] <= 1 and 0 <= src["cluster"]["est"] <= 1
        clipped.append(src["direct"]["est"] - truth[source == DIRECT].mean())
        cover += e.lo <= t <= e.hi
    assert abs(np.mean(err)) < 0.004
    assert np.mean(clipped) < -0.005
    assert cover / 300 >= 0.9


def test_a_source_is_short_only_on_enough_audits_with_both_its_estimate_and_bound_under_the_target():
    from crowdprop.policy.audit import short_source

    two_noes = {"masks": 500, "audits": 2, "est": 0.0, "lo": 0.0, "hi": 0.6}
    assert not short_source(two_noes, 0.9, 10)  # two answers do not shut a source down
    assert short_source({**two_noes, "audits": 10}, 0.9, 10)
    assert not short_source({"masks": 500, "audits": 40, "est": 0.93, "lo": 0.85, "hi": 0.98}, 0.9, 10)
    assert short_source({"masks": 500, "audits": 40, "est": 0.86, "lo": 0.78, "hi": 0.93}, 0.9, 10)
    assert not short_source({"masks": 500, "audits": 0, "est": None, "lo": None, "hi": None}, 0.9, 0)
    assert not short_source(None, 0.9, 10)
