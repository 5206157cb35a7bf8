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
