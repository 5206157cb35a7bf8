"""Whole campaigns with audits and the target policy (replays with simulated workers)."""
import json

import numpy as np
import pandas as pd
import pytest

from crowdprop.crowd.factory import simulated_backend
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign, load_state
from crowdprop.campaign.store import RunDir
from crowdprop.report.summary import compute_report
from crowdprop.replay.synth_mixed import make_mixed, write_mixed

from faults import Crash, Flaky  # noqa: E402


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A 4,000-mask set of the second generator: impure clusters, borderline masks."""
    d = tmp_path_factory.mktemp("mixed")
    write_mixed(make_mixed(4000, 8, seed=3), d / "set")
    return d / "set"


def _run(tmp, src, policy: str, seed: int = 0, **over):
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / f"{policy}.toml"
    lines = [f'name = "{policy}"'] + [f"{k} = {json.dumps(v)}" for k, v in over.items()]
    cfg.write_text("[policy]\n" + "\n".join(lines) + "\n")
    return init_run(tmp / f"run-{policy}-{seed}", predictions=src / "predictions.json", gt=src / "gt.json",
                    features=src / "features.npy", crowd={"kind": "simulated"}, seed=seed, config_path=cfg)


@pytest.fixture(scope="module")
def paper_done(mixed, tmp_path_factory):
    rd = _run(tmp_path_factory.mktemp("p"), mixed, "paper")
    Campaign(rd, simulated_backend(rd), progress=False).run()
    return rd


def test_paper_posterior_overstates_and_the_audit_does_not(paper_done):
    rep = compute_report(paper_done)
    t = rep["total"]
    truth = t["true_precision"]
    assert t["audit_questions"] > 0
    # audits are counted among the questions and never label a mask
    ans = paper_done.read_rounds("answers")
    assert t["audit_questions"] == int(((ans["kind"] == "audit") & ans["used"]).sum())
    assert t["questions"] == int((ans["used"] & ~ans["is_gold"]).sum())
    over = t["posterior_precision"] - truth
    assert over > 0.01  # winner's curse: the deciding answers look better than the masks
    assert abs(t["est_precision"] - truth) < over
    assert t["est_precision_lo"] <= truth <= t["est_precision_hi"]
    # per source: the audited cluster estimate is near its truth
    cl = t["by_source"]["cluster"]
    assert cl["audits"] > 20
    assert abs(cl["est"] - cl["true_precision"]) < 0.06


def test_audit_answers_do_not_label_their_masks(paper_done):
    st = load_state(paper_done)
    ans = st.answers
    aud = ans[ans["kind"] == "audit"]
    only_audited = np.setdiff1d(aud["mask_row"].unique(), ans.loc[ans["kind"] != "audit", "mask_row"].unique())
    assert len(only_audited) > 0
    assert np.isnan(st.label_p[only_audited]).all()
    # every audit was drawn from the previous round's decisions, uniformly within its stratum
    audits = paper_done.read_rounds("audits")
    assert (audits["decided_round"] == audits["round"] - 1).all()
    for (r, s, lab), g in audits.groupby(["round", "source", "label"]):
        assert g["weight"].sum() == pytest.approx(g["frame"].iloc[0])


def test_target_policy_holds_its_target_and_reports_sources(mixed, tmp_path):
    rd = _run(tmp_path, mixed, "target")
    Campaign(rd, simulated_backend(rd), progress=False).run()
    rep = compute_report(rd)
    t = rep["total"]
    assert t["true_precision"] >= 0.88  # target 0.90; a single seed on 4,000 masks
    assert t["est_precision_lo"] <= t["true_precision"] <= t["est_precision_hi"]
    assert sum(v["accepted"] for v in t["by_source"].values()) == t["accepted"]
    controls = rd.read_rounds("controls")
    assert len(controls) == t["rounds"] and controls["verifier_fitted"].any()
    q = rd.read_rounds("questions")
    assert {"cluster", "audit", "gold", "active"} <= set(q["kind"])
    # per class: audited estimate and a certified bound, or "too few audits" (None)
    assert all(("certified_precision" in c) for c in rep["classes"] if c["accepted"])
    # no large cluster accepted on k answers
    d = rd.read_rounds("decisions")
    big = d[(d["decision"] == "accept") & (d["size"] > 2000)]
    assert (big["n_labeled"] > 15).all()


@pytest.mark.parametrize("method, n", [("publish", 4), ("settle", 9)])
def test_target_resume_after_a_kill_gives_the_same_verdicts_and_audits(mixed, tmp_path, method, n):
    ref = _run(tmp_path / "a", mixed, "target", seed=1, verifier_min_answers=60)
    Campaign(ref, simulated_backend(ref), progress=False).run(max_rounds=6)
    rd = _run(tmp_path / "b", mixed, "target", seed=1, verifier_min_answers=60)
    with pytest.raises(Crash):
        Campaign(rd, Flaky(simulated_backend(rd), method, n), progress=False).run(max_rounds=6)
    rd2 = RunDir(rd.path)
    done = len(rd2.rounds())
    Campaign(rd2, simulated_backend(rd2), progress=False).run(max_rounds=6 - done)
    for name in ("verdicts", "audits", "decisions", "controls"):
        a, b = ref.read_rounds(name), rd2.read_rounds(name)
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)
    assert len(ref.read_rounds("verdicts")) > 0
