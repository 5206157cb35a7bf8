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
