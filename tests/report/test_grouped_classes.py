"""The report's per-class figures computed grouped by class in one pass are the ones a call per
class over the whole campaign's arrays gives (report.json's ``classes``, the HTML class table,
the target policy's short classes).

The per-class loops the code had before are kept here as the reference, with the audited
estimate's algorithm as it was (:func:`_reference_audited_precision`); each class's draws come
from the same generators in the same order, so the comparisons are exact, floats included."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.crowd.factory import simulated_backend
from crowdprop.policy import audit
from crowdprop.policy.audit import SOURCE_NAMES, Estimate
from crowdprop.replay.synth_mixed import make_mixed, write_mixed
from crowdprop.report import html, summary
from crowdprop.schema import NODE_INACTIVE


# ------------------------------------------------------------------ the reference (the per-class loops)
def _reference_audited_precision(final, source, audits_ok, noise, *, subset=None, label=1, credible=0.95, rng,
                                 draws=4000) -> Estimate:
    """``policy.audit.audited_precision`` as it was: whole-campaign filters per call."""
    keep = final == label
    if subset is not None:
        keep &= subset
    n_total = int(keep.sum())
    if n_total == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, {})
    sens = rng.beta(noise[0], noise[1], draws)
    spec = rng.beta(noise[2], noise[3], draws)
    youden = np.maximum(sens + spec - 1.0, 0.05)
    sens_m, spec_m = noise[0] / (noise[0] + noise[1]), noise[2] / (noise[2] + noise[3])
    tail = (1.0 - credible) / 2.0
    acc = np.zeros(draws)
    point = 0.0
    by_source: dict[str, dict] = {}
    n_aud = 0
    a_ok = audits_ok[audits_ok["label"] == label] if len(audits_ok) else audits_ok
    if subset is not None and len(a_ok):
        a_ok = a_ok[subset[a_ok["mask_row"].to_numpy(np.int64)]]
    for s, name in SOURCE_NAMES.items():
        n_s = int((keep & (source == s)).sum())
        if n_s == 0:
            continue
        g = a_ok[a_ok["source"] == s] if len(a_ok) else a_ok
        if len(g) == 0:
            theta = rng.uniform(0.0, 1.0, draws)
            theta_hat = 0.5
            by_source[name] = {"masks": n_s, "audits": 0, "est": None, "lo": None, "hi": None}
        else:
            w = g["weight"].to_numpy(np.float64)
            y = g["yes"].to_numpy(np.float64)
            phi_hat = float((w * y).sum() / w.sum())
            n_eff = float(w.sum() ** 2 / (w ** 2).sum())
            phi = rng.beta(phi_hat * n_eff + 0.5, (1.0 - phi_hat) * n_eff + 0.5, draws)
            theta = (phi - (1.0 - spec)) / youden
            theta_hat = (phi_hat - (1.0 - spec_m)) / max(sens_m + spec_m - 1.0, 0.05)
            lo, hi = np.clip(np.quantile(theta, [tail, 1.0 - tail]), 0.0, 1.0)
            by_source[name] = {"masks": n_s, "audits": int(len(g)), "est": min(max(theta_hat, 0.0), 1.0),
                               "lo": float(lo), "hi": float(hi)}
            n_aud += len(g)
        acc += n_s * theta
        point += n_s * theta_hat
    prec = np.clip(acc / n_total, 0.0, 1.0)
    lo, hi = np.quantile(prec, [tail, 1.0 - tail])
    return Estimate(min(max(point / n_total, 0.0), 1.0), float(lo), float(hi), n_total, n_aud, by_source)


def _reference_classes(run, final, source, ok, noise, correct, seed):
    """``report.summary._sources_and_classes``'s class loop as it was."""
    cfg = run.config.policy
    cats = run.masks["category_id"].to_numpy(np.int64)
    conf = 2 * cfg.target_confidence - 1.0
    classes = []
    for c in np.unique(cats):
        sub = cats == c
        acc = int(((final == 1) & sub).sum())
        rec = {"category_id": int(c), "masks": int(sub.sum()), "accepted": acc,
               "rejected": int(((final == 0) & sub).sum()), "open": int(((final < 0) & sub).sum())}
        if acc:
            rng = np.random.default_rng([seed, 97, int(c) % (2**31)])
            e = _reference_audited_precision(final, source, ok, noise, subset=sub, credible=cfg.credible, rng=rng)
            low = _reference_audited_precision(final, source, ok, noise, subset=sub, credible=conf, rng=rng)
            unaudited = any(v["audits"] == 0 for v in e.by_source.values())
            rec.update({"est_precision": e.mean, "est_precision_lo": e.lo, "est_precision_hi": e.hi,
                        "audits": e.n_audits, "certified_precision": None if unaudited else low.lo})
            if correct is not None:
                rec["true_precision"] = float(correct[(final == 1) & sub].mean())
        classes.append(rec)
    return classes


def _reference_class_table(run, status, label_p, final, replay):
    """``report.html.class_table``'s loop as it was: one ``precision_estimate`` per class over
    the whole campaign with the other classes masked out."""
    cfg = run.config
    forest = run.forest
    cat = run.masks["category_id"].to_numpy(np.int64)
    iou = run.masks["gt_iou"].to_numpy(np.float64)
    correct = iou > cfg.campaign.correct_iou
    answers = run.read_rounds("answers")
    decisions = run.read_rounds("decisions")
    plain = answers[answers["used"].astype(bool) & ~answers["is_gold"].astype(bool)]
    q_per_cat = pd.Series(cat[plain["mask_row"].to_numpy(np.int64)]).value_counts()
    rows = []
    for c in np.unique(cat):
        in_c = cat == c
        acc = in_c & (final == 1)
        st = status.copy()
        st[forest.category != c] = NODE_INACTIVE
        lp = np.where(in_c, label_p, np.nan)
        fi = np.where(in_c, final, -1).astype(np.int8)
        if acc.any() and len(decisions):
            est, lo, hi = summary.precision_estimate(run, st, decisions, lp, fi, credible=cfg.policy.credible,
                                                     seed=cfg.campaign.seed, answers=answers)
        else:
            est = lo = hi = float("nan")
        rows.append({"category_id": int(c), "masks": int(in_c.sum()), "accepted": int(acc.sum()),
                     "rejected": int((in_c & (final == 0)).sum()), "open": int((in_c & (final < 0)).sum()),
                     "questions": int(q_per_cat.get(c, 0)), "est_precision": est, "est_precision_lo": lo,
                     "est_precision_hi": hi,
                     "true_precision": float(correct[acc].mean()) if replay and acc.any() else float("nan"),
                     "mean_iou": float(iou[acc].mean()) if replay and acc.any() else float("nan")})
    return rows


# ------------------------------------------------------------------ campaigns
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """2,400 masks in 6 classes of the second generator (impure clusters, borderline masks)."""
    d = tmp_path_factory.mktemp("grouped")
    write_mixed(make_mixed(2400, 6, seed=5), d / "set")
    return d / "set"


def _campaign(tmp, src, policy: str):
    cfg = tmp / f"{policy}.toml"
    cfg.write_text(f'[policy]\nname = "{policy}"\n')
    rd = init_run(tmp / f"run-{policy}", predictions=src / "predictions.json", gt=src / "gt.json",
                  features=src / "features.npy", crowd={"kind": "simulated"}, seed=1, config_path=cfg)
    Campaign(rd, simulated_backend(rd), progress=False).run()
    return rd


@pytest.fixture(scope="module", params=["paper", "target"])
def done(request, mixed, tmp_path_factory):
    return _campaign(tmp_path_factory.mktemp(request.param), mixed, request.param)


def _same(a, b):
    """Equal, NaN equal to NaN (floats compared exactly: the same draws give the same bits)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ------------------------------------------------------------------ tests
def test_report_classes_are_the_per_class_loops(done, monkeypatch):
    seen = {}
    real = summary._sources_and_classes

    def spy(run, final, source, ok, noise, correct, seed):
        seen.update(final=final, source=source, ok=ok, noise=noise, correct=correct, seed=seed)
        return real(run, final, source, ok, noise, correct, seed)

    monkeypatch.setattr(summary, "_sources_and_classes", spy)
    rep = summary.compute_report(done)
    ok = seen["ok"]
    cats = done.masks["category_id"].to_numpy(np.int64)
    # the campaign exercises what the grouping must get right: several classes, audited sources
    assert len(np.unique(cats)) == 6 and len(ok) > 20
    assert {int(s) for s in ok["source"]} >= {audit.CLUSTER}
    if done.config.policy.name == "target":
        assert len(done.read_rounds("audits")) > len(ok)  # a share of the audits steered the controls
    ref = _reference_classes(done, seen["final"], seen["source"], ok, seen["noise"], seen["correct"], seen["seed"])
    got = rep["classes"]
    assert [c["category_id"] for c in got] == [c["category_id"] for c in ref]
    with_audits = 0
    for g, r in zip(got, ref):
        for k, v in r.items():
            assert _same(g[k], v), (g["category_id"], k, g[k], v)
        assert set(g) - set(r) == {"name"}
        with_audits += bool(r.get("audits"))
        if r["accepted"]:
            assert g["est_precision_lo"] <= g["est_precision"] <= g["est_precision_hi"]
    assert with_audits >= 4
    # and byte for byte once written as report.json is
    assert json.dumps([{k: v for k, v in g.items() if k != "name"} for g in got]) == json.dumps(ref)


def test_class_table_is_the_per_class_loop(done):
    status, label_p, final = html.final_labels(done)
    got = html.class_table(done, status=status, label_p=label_p, final=final, replay=True)
    ref = pd.DataFrame(_reference_class_table(done, status, label_p, final, True))
    got = got.sort_values("category_id").reset_index(drop=True)
    assert got["category_id"].tolist() == ref["category_id"].tolist()
    for col in ref.columns:
        for c, g, r in zip(ref["category_id"], got[col], ref[col]):
            assert _same(g, r), (c, col, g, r)
    assert ref["est_precision"].notna().sum() >= 4


def test_class_table_estimates_with_posterior_labels_are_the_per_class_loop(done, monkeypatch):
    """The other branch of precision_estimate (Dawid-Skene labels used as they are)."""
    monkeypatch.setattr(done.config.quality, "aggregation", "ds")
    status, label_p, final = html.final_labels(done)
    got = html.class_table(done, status=status, label_p=label_p, final=final, replay=False)
    ref = pd.DataFrame(_reference_class_table(done, status, label_p, final, False))
    got = got.sort_values("category_id").reset_index(drop=True)
    for col in ("est_precision", "est_precision_lo", "est_precision_hi", "accepted", "questions"):
        for c, g, r in zip(ref["category_id"], got[col], ref[col]):
            assert _same(g, r), (c, col, g, r)


def test_audited_precision_and_short_classes_are_the_reference(done):
    """The grouped statistics behind audited_precision (one group or a subset) and short_classes
    (one shared generator over the classes, in their order)."""
    from crowdprop.campaign.loop import load_state

    st = load_state(done)
    final, source = st.final, st.source
    ok = audit.valid_audits(done.read_rounds("audits"), st.answers, final, source, st.decided_round)
    cats = done.masks["category_id"].to_numpy(np.int64)
    noise = st.noise
    for label in (1, 0):
        for subset in (None, cats == cats[0]):
            a = audit.audited_precision(final, source, ok, noise, subset=subset, label=label, credible=0.9,
                                        rng=np.random.default_rng(7), draws=500)
            b = _reference_audited_precision(final, source, ok, noise, subset=subset, label=label, credible=0.9,
                                             rng=np.random.default_rng(7), draws=500)
            assert a == b
    classes = [int(c) for c in np.unique(cats)][::-1] + [999]  # any order; a class with no mask
    for target in (0.99, 0.8):
        got = audit.short_classes(final, source, ok, noise, cats, classes, target=target, confidence=0.9,
                                  min_audits=2, rng=np.random.default_rng(3))
        rng = np.random.default_rng(3)
        ref = []
        for c in classes:
            e = _reference_audited_precision(final, source, ok, noise, subset=cats == c, credible=0.8, rng=rng)
            if e.n_audits >= 2 and e.lo < target and e.mean < target:
                ref.append((c, e))
        assert got == ref
    assert audit.short_classes(final, source, ok, noise, cats, classes, target=0.99, confidence=0.9, min_audits=2,
                               rng=np.random.default_rng(3))  # some class falls short of 0.99
