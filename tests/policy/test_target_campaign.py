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
    # a third of the questions on audits, so that one seed's estimate is within a couple of
    # points (the share of seeds whose interval covers is measured in benchmarks/bench_policy.py)
    rd = _run(tmp_path_factory.mktemp("p"), mixed, "paper", audit_share=0.3)
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
    # every audit was drawn from decisions of earlier rounds, uniformly within its stratum; later
    # rounds top up the strata of early ones, and never audit a mask twice in one stratum
    audits = paper_done.read_rounds("audits")
    assert (audits["decided_round"] < audits["round"]).all()
    assert (audits["decided_round"] < audits["round"] - 1).any()
    assert not audits.duplicated(["mask_row", "decided_round", "source", "label"]).any()
    for (r, d, s, lab), g in audits.groupby(["round", "decided_round", "source", "label"]):
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


def test_a_campaign_whose_next_round_would_change_nothing_stops(mixed, tmp_path, monkeypatch):
    """A round that would ask nothing, split nothing, settle no mask and only wait is the same
    round for ever: the campaign stops there (recorded, and `status` calls it finished) instead
    of running empty rounds up to max_rounds."""
    import crowdprop.policy.target as target
    from crowdprop.campaign.loop import NO_PROGRESS
    from crowdprop.commands.status import collect_status

    real_plan, real_decide = target.plan_target, target.decide_target

    def plan_nothing(*a, **kw):  # every candidate chosen, nothing asked
        plan, pool = real_plan(*a, **kw)
        plan.asks = {n: np.zeros(0, np.int64) for n in plan.nodes}
        return plan, pool[:0]

    def only_wait(*a, **kw):
        out = real_decide(*a, **kw)
        out["decision"] = "wait"
        return out

    monkeypatch.setattr(target, "plan_target", plan_nothing)
    monkeypatch.setattr(target, "decide_target", only_wait)
    rd = _run(tmp_path, mixed, "target")
    res = Campaign(rd, simulated_backend(rd), progress=False).run()
    assert res.stop_reason == NO_PROGRESS
    # round 1 applies the free splits (progress), round 2 would change nothing and is not run
    assert rd.rounds() == [1] and res.rounds_run == 1
    assert len(rd.read_rounds("questions")) == 0
    assert RunDir(rd.path).campaign["stopped"] == {"reason": NO_PROGRESS, "after_round": 1}
    st = collect_status(RunDir(rd.path))
    assert st["finished"] and st["open"] > 0


def test_the_verifier_settles_masks_only_after_answers_to_its_own_questions(mixed, tmp_path):
    """Fitted on cluster samples alone, the verifier has not seen the masks it would settle (at
    1M it accepted masks 27-58 % correct): it settles none before `verifier_settle_after`
    answers to its own (active and random) questions, and with 0 from the round it is fitted."""
    from crowdprop.campaign.evidence import own_answers

    def first_verdict_round(rd):
        v = rd.read_rounds("verdicts")
        return int(v["round"].min()) if len(v) else None

    gated = _run(tmp_path / "g", mixed, "target", verifier_min_answers=60, verifier_settle_after=150)
    Campaign(gated, simulated_backend(gated), progress=False).run(max_rounds=8)
    free = _run(tmp_path / "f", mixed, "target", verifier_min_answers=60, verifier_settle_after=0)
    Campaign(free, simulated_backend(free), progress=False).run(max_rounds=8)
    ctl = free.read_rounds("controls")
    fitted = int(ctl.loc[ctl["verifier_fitted"].astype(bool), "round"].min())
    assert first_verdict_round(free) == fitted
    rg = first_verdict_round(gated)
    assert rg is not None and rg > fitted
    ans = gated.read_rounds("answers")
    assert own_answers(ans[ans["round"] < rg]) >= 150  # enough own answers before it settled
    assert own_answers(ans[ans["round"] < rg - 1]) < 150  # and it settled as soon as it had them


def test_a_rounds_active_questions_grow_with_the_verifiers_answers(mixed, tmp_path):
    """Active questions are at most max(50, the answers the verifier was fitted on) a round. With
    clusters of up to 120 masks checked mask by mask, round 2's pool holds far more masks than
    round 1's answers: the cap is what sets its size, and later rounds stay under it."""
    rd = _run(tmp_path, mixed, "target", min_cluster_size=120)
    Campaign(rd, simulated_backend(rd), progress=False).run()
    c = rd.read_rounds("controls").set_index("round")
    q = rd.read_rounds("questions")
    active = q[q["kind"] == "active"].groupby("round").size().reindex(c.index, fill_value=0)
    cap = np.maximum(50, c["verifier_train"].to_numpy())
    fitted = c["verifier_fitted"].to_numpy()
    assert fitted.sum() >= 3
    assert (active.to_numpy()[fitted] <= cap[fitted]).all()
    first = int(np.flatnonzero(fitted)[0])
    assert active.iloc[first] == cap[first] > 100


def test_the_settle_gate_shrinks_with_a_small_set():
    """At most 5 % of the masks: the 997-mask sample asks 85 questions of its own in its whole
    campaign, so a gate of 100 would leave its low-quality clusters open."""
    from crowdprop.campaign.evidence import settle_after

    assert settle_after(100, 997) == 50
    assert settle_after(100, 1_999) == 100 and settle_after(100, 1_000_000) == 100
    assert settle_after(150, 4_000) == 150  # the campaign test above keeps its own gate
    assert settle_after(0, 997) == 0


def test_a_class_still_short_with_nothing_to_reopen_is_logged_once():
    """The controls table keeps every note; the log tells what is new: a class short of the target
    whose accepted clusters all still pass says so once, not every round after."""
    from crowdprop.campaign.loop import news_of

    prev = ("cluster audited lower bound 0.850 < target: tolerance -> 0.005, 2 accepted clusters re-opened; "
            "class 4 audited 0.879 [0.619, 1.000] < target: 0 accepted clusters re-opened")
    notes = ["class 4 audited 0.880 [0.627, 1.000] < target: 0 accepted clusters re-opened",  # the same again
             "class 14 audited 0.870 [0.600, 1.000] < target: 0 accepted clusters re-opened",  # new class
             "class 7 audited 0.850 [0.700, 0.950] < target: 0 accepted clusters re-opened",
             "cluster audited lower bound 0.850 < target: tolerance -> 0.0025, 0 accepted clusters re-opened"]
    assert news_of(notes, prev) == [False, True, True, True]
    # something re-opened is news even for a class that was short before
    assert news_of(["class 4 audited 0.800 [0.600, 0.900] < target: 3 accepted clusters re-opened"], prev) == [True]
    # the first round with controls has no previous note
    assert news_of(notes[:1], "") == [True]
    # "class 4" is not "class 14": a repeat needs the same class
    assert news_of(["class 4 audited 0.9 [0.6, 1.0] < target: 0 accepted clusters re-opened"],
                   "class 14 audited 0.9 [0.6, 1.0] < target: 0 accepted clusters re-opened") == [True]


def test_diminishing_returns_counts_rounds_that_got_answers():
    from crowdprop.campaign.loop import diminishing_returns

    # 1,000 masks; rounds 1-5 decided 400, 300, 5, 0 and 8 of them (the last decision of each mask)
    decided = np.repeat([1, 2, 3, 5, 0], [400, 300, 5, 8, 287])
    final = np.where(decided > 0, 1, -1)

    def answers(rounds, used=True, gold=False):
        return pd.DataFrame({"round": rounds, "used": used, "is_gold": gold,
                             "kind": "gold" if gold else "cluster", "label": 1, "mask_row": 0})

    a = answers([1, 2, 3, 4, 5])
    kw = dict(share=0.01, patience=3)  # under 10 masks a round, three rounds with answers in a row
    assert diminishing_returns(decided, final, a, **kw)
    assert not diminishing_returns(decided, final, a, share=0.005, patience=3)  # 5 and 8 >= 5
    assert not diminishing_returns(decided, final, a, share=0.01, patience=4)  # round 2: 300
    assert not diminishing_returns(decided, final, a, share=0.0, patience=3)  # off
    # round 4's HITs expired (no answer): it is skipped, not counted, so rounds 2, 3, 5 are the last three
    a4 = answers([1, 2, 3, 5])
    assert not diminishing_returns(decided, final, a4, **kw)
    # only rejected work or only gold answers in round 4: the same
    a4r = pd.concat([a4, answers([4], used=False), answers([4], gold=True)], ignore_index=True)
    assert not diminishing_returns(decided, final, a4r, **kw)
    # fewer rounds with answers than the patience: not yet
    assert not diminishing_returns(decided, final, answers([4, 5]), **kw)
    # masks re-opened since (final -1) do not count for the round that had decided them
    assert diminishing_returns(decided, np.where(decided == 2, -1, final), a, share=0.01, patience=4)


def test_a_campaign_stops_at_diminishing_returns(mixed, tmp_path):
    """With [campaign] stop_below_share, the campaign ends once its last rounds each decide under
    that share of the masks: recorded as the stop reason, the same rounds as without it up to there."""
    from crowdprop.campaign.loop import DIMINISHING
    from crowdprop.commands.status import collect_status

    runs = {}
    for name, extra in [("off", {}), ("on", {"stop_below_share": 0.01, "stop_patience": 2})]:
        d = tmp_path / name
        d.mkdir()
        cfg = d / "c.toml"
        cfg.write_text('[policy]\nname = "target"\n[campaign]\n'
                       + "".join(f"{k} = {v}\n" for k, v in extra.items()))
        rd = init_run(d / "run", predictions=mixed / "predictions.json", gt=mixed / "gt.json",
                      features=mixed / "features.npy", crowd={"kind": "simulated"}, config_path=cfg)
        res = Campaign(rd, simulated_backend(rd), progress=False).run()
        st = load_state(rd)
        runs[name] = (rd, res, np.bincount(st.decided_round[st.final >= 0], minlength=res.last_round + 1)[1:])
    (rd_off, off, per_off), (rd_on, on, per_on) = runs["off"], runs["on"]
    assert on.stop_reason == DIMINISHING and off.stop_reason != DIMINISHING
    assert on.last_round < off.last_round
    bar = 0.01 * 4000  # 40 masks of the 4,000
    # it stopped after the first two rounds in a row under 40 masks each, not before
    low = per_on < bar
    assert low[-1] and low[-2] and not (low[:-2][1:] & low[:-2][:-1]).any()
    # up to there the campaign is the one without the rule
    assert per_on.tolist() == per_off[:len(per_on)].tolist()
    q_on, q_off = rd_on.read_rounds("questions"), rd_off.read_rounds("questions")
    assert q_on["mask_row"].tolist() == q_off[q_off["round"] <= on.last_round]["mask_row"].tolist()
    assert RunDir(rd_on.path).campaign["stopped"] == {"reason": DIMINISHING, "after_round": on.last_round}
    assert collect_status(RunDir(rd_on.path))["finished"]
