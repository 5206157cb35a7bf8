"""Never pay for what is not recorded: resumes with changes, copies, late work, MTurk's own approvals.

Every test runs a campaign of the shipped sample through the real boto3 client against the
local MTurk-compatible endpoint (in process, on a manual clock), interrupts it where the
case needs, changes what a requester changes, runs it again, and then reads the endpoint
back through the MTurk API: every assignment it holds must be in the run directory exactly
once, its answers recorded against the masks its worker was shown, and the run directory's
spend must be what the endpoint charged, to the cent, even after the clock moves a month on
(MTurk approves submitted work on its own after ``AutoApprovalDelayInSeconds``).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
import sys

import numpy as np
import pytest
from filelock import FileLock

from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import LOCK_OWNER, RunDir
from crowdprop.cli import main
from crowdprop.crowd.factory import local_client, mturk_backend
from crowdprop.crowd.mturk import BudgetGuard
from crowdprop.crowd.targets import record_target, resolve_target
from crowdprop.errors import BudgetExhausted
from crowdprop.io import atomic_write_text
from crowdprop.mturk_local import LocalMTurk, ManualClock, page_questions, serve, truth_from_masks
from crowdprop.replay.workers import WorkerPool

from .conftest import REPO, clone

sys.path.insert(0, str(REPO / "tests"))
from faults import Crash, Flaky  # noqa: E402

PERFECT = {"workers": 25, "accuracy": 1.0, "accuracy_spread": 0.0}
FAST = {"poll_interval_s": 0.0, "round_timeout_s": 5.0}
MONTH = 31 * 86400


def ticks():
    """A loop clock that moves one second per reading: a round times out after a few polls."""
    counter = itertools.count()
    return lambda: float(next(counter))


class Rig:
    """A local MTurk endpoint (manual clock) for a run directory, read back through boto3."""

    def __init__(self, rd: RunDir, **kw):
        cfg = rd.config
        self.clock = ManualClock()
        self.local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                                WorkerPool.build(cfg.simulation, cfg.campaign.seed), clock=self.clock,
                                images_dir=rd.path / "hit_images", **kw)
        self.handle = serve(self.local)
        self.url = self.handle.url
        self.client = local_client(self.url)

    def crowd(self, rd: RunDir):
        where = resolve_target(rd, endpoint_url=self.url)
        record_target(rd, where)
        return mturk_backend(rd, where, retry_wait_s=0.002)

    def campaign(self, rd: RunDir, crowd=None, **kw) -> Campaign:
        return Campaign(rd, crowd if crowd is not None else self.crowd(rd), progress=False, clock=ticks(), **kw)

    def shown(self) -> dict[str, dict[str, int]]:
        """HIT id -> {question id: mask id} as the worker page of each HIT shows them (GetHIT)."""
        out = {}
        for page in self.client.get_paginator("list_hits").paginate():
            for h in page["HITs"]:
                question = self.client.get_hit(HITId=h["HITId"])["HIT"]["Question"]
                html = question.split("<HTMLContent><![CDATA[", 1)[1].rsplit("]]></HTMLContent>", 1)[0]
                out[h["HITId"]] = {q.question_id: q.mask_id for q in page_questions(html)}
        return out

    def assignments(self) -> list[dict]:
        out = []
        for hit_id in self.shown():
            for page in self.client.get_paginator("list_assignments_for_hit").paginate(
                    HITId=hit_id, AssignmentStatuses=["Submitted", "Approved", "Rejected"]):
                out += page["Assignments"]
        return out

    def stop(self):
        self.handle.stop()


@pytest.fixture
def rigs():
    made = []

    def make(rd, **kw):
        made.append(Rig(rd, **kw))
        return made[-1]
    yield make
    for r in made:
        r.stop()


def books(rig: Rig, *rds: RunDir) -> dict:
    """The endpoint against the run directories: returns the figures the tests assert on."""
    shown = rig.shown()
    api = rig.assignments()
    led = rig.local.ledger(entries=True)
    asg = [rd.read_rounds("assignments") for rd in rds]
    ans = [rd.read_rounds("answers") for rd in rds]
    recorded = [set(a["assignment_id"]) if len(a) else set() for a in asg]
    lost = [a["AssignmentId"] for a in api if sum(a["AssignmentId"] in r for r in recorded) == 0]
    twice = [a["AssignmentId"] for a in api if sum(a["AssignmentId"] in r for r in recorded) > 1]
    misattributed = 0
    for rd, an in zip(rds, ans):
        if len(an) == 0:
            continue
        mask_id = rd.masks["mask_id"].to_numpy()
        for hid, qid, row in zip(an["hit_id"], an["question_id"], an["mask_row"]):
            misattributed += shown.get(hid, {}).get(qid) != int(mask_id[row])
    paid = {}
    for e in led["entries"]:
        paid[e["assignment_id"]] = paid.get(e["assignment_id"], 0) + e["cents"]
    spent = {}
    for rd in rds:
        sp = rd.read_rounds("spend")
        for aid, c in zip(sp["assignment_id"], sp["cents"]) if len(sp) else ():
            spent[aid] = spent.get(aid, 0) + int(c)
    unrecorded = sum(c - spent.get(aid, 0) for aid, c in paid.items() if c > spent.get(aid, 0))
    return {"lost": lost, "twice": twice, "misattributed": misattributed, "unrecorded_cents": unrecorded,
            "charged_cents": sum(paid.values()), "spent_cents": sum(spent.values()), "ledger": led,
            "submitted": sum(a["AssignmentStatus"] == "Submitted" for a in api), "api": api}


def assert_books_balance(rig, *rds, month_later: bool = True):
    if month_later:  # what is still Submitted would now be approved by MTurk on its own
        rig.clock.advance(MONTH)
    b = books(rig, *rds)
    assert b["lost"] == [] and b["twice"] == [] and b["misattributed"] == 0
    assert b["submitted"] == 0
    assert b["unrecorded_cents"] == 0 and b["charged_cents"] == b["spent_cents"]
    assert b["ledger"]["tokens_with_several_hits"] == [] and b["ledger"]["approved_more_than_once"] == []
    return b


def rewrite_config(rd: RunDir, **sections) -> None:
    cfg = rd.config
    cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **kw)
                                      for name, kw in sections.items()})
    atomic_write_text(rd.path / "config.json", cfg.to_json())


def interrupted(rig: Rig, rd: RunDir) -> list[dict]:
    """Round 1 published, killed at its first poll: its HITs are live. Returns the journal's HIT lines."""
    with pytest.raises(Crash):
        rig.campaign(rd, Flaky(rig.crowd(rd), "poll", 1)).run()
    published = [x for x in rd.journal_lines(1, "published") if "hit_id" in x]
    assert rd.rounds() == [] and published
    return published


# ------------------------------------------------------------------------------------------------ 1
def test_a_resumed_round_finishes_the_round_it_journaled(sample_run, tmp_path, rigs, caplog):
    """Interrupted with its HITs live, then the configuration, the seed and the gold pool change:
    the round goes on with the questions the workers were shown; the changes apply from round 2."""
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.5})
    rig = rigs(rd)
    published = interrupted(rig, rd)
    rewrite_config(rd, crowd={"questions_per_hit": 20, "golds_per_hit": 3, "reward_usd": 0.10},
                   campaign={"seed": 99, "budget_usd": 2.0}, policy={"k": 12})
    pool = rd.golds
    extra = rd.masks[~np.isin(np.arange(len(rd.masks)), pool["mask_row"])].head(40)
    truth = rd.masks["gt_iou"].to_numpy() > rd.config.campaign.correct_iou
    golds = tmp_path / "golds.csv"
    golds.write_text("mask_id,label\n" + "".join(f"{m},{'yes' if truth[i] else 'no'}\n"
                                                  for i, m in zip(extra.index, extra["mask_id"])))
    assert main(["gold", "import", str(rd.path), str(golds)]) == 0

    caplog.set_level(logging.WARNING)
    rig.campaign(RunDir(rd.path)).run(max_rounds=2)
    rd = RunDir(rd.path)
    assert "round 1 continues as it was planned" in caplog.text
    assert "crowd.questions_per_hit" in caplog.text and "gold pool" in caplog.text
    assert "take effect from round 2" in caplog.text
    b = assert_books_balance(rig, rd)
    hits = rd.read_rounds("hits")
    r1, r2 = hits[hits["round"] == 1], hits[hits["round"] == 2]
    # round 1: the HITs it published, as published (50 questions at $0.20), nothing else
    assert sorted(r1["hit_id"]) == sorted(x["hit_id"] for x in published)
    assert (r1["reward_cents"] == 20).all() and (r1["n_questions"] == 50).all()
    # round 2: the new configuration
    assert len(r2) and (r2["n_questions"] <= 20).all() and r2["reward_cents"].max() == 10
    # perfect workers: no honest worker rejected for "low gold accuracy" against a plan they never saw
    asg = rd.read_rounds("assignments")
    assert asg["approved"].all() and asg["judged_ok"].all() and len(asg) == len(b["api"])


def test_a_copied_run_directory_never_adopts_the_originals_hits(sample_run, tmp_path, rigs, caplog):
    rd = clone(sample_run, tmp_path / "orig", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.0})
    rig = rigs(rd)
    interrupted(rig, rd)
    copy = RunDir(shutil.copytree(rd.path, tmp_path / "copy"))
    caplog.set_level(logging.WARNING)
    rig.campaign(copy).run(max_rounds=1)
    assert "a copy of" in caplog.text and str(rd.path) in caplog.text
    rig.campaign(RunDir(rd.path)).run(max_rounds=1)
    rd, copy = RunDir(rd.path), RunDir(copy.path)
    ha, hb = rd.read_rounds("hits"), copy.read_rounds("hits")
    assert len(ha) and len(hb)
    assert not set(ha["hit_id"]) & set(hb["hit_id"]) and not set(ha["token"]) & set(hb["token"])
    assert json.loads((copy.path / "campaign.json").read_text())["nonce"] != rd.nonce
    b = assert_books_balance(rig, rd, copy)
    assert b["ledger"]["hits_created"] == len(ha) + len(hb)


# ------------------------------------------------------------------------------------------------ 2, 3
@pytest.mark.parametrize("change", ["budget", "reward"])
def test_a_budget_or_reward_lowered_mid_round_leaves_no_live_hit_behind(sample_run, tmp_path, rigs, change):
    """The work of every HIT published is recorded and paid at the reward it was published with;
    a lower cap stops new HITs."""
    rd = clone(sample_run, tmp_path / "r", crowd=FAST, campaign={"budget_usd": 1.5})
    rig = rigs(rd)
    published = interrupted(rig, rd)
    created = rig.local.ledger()["hits_created"]
    if change == "budget":
        rewrite_config(rd, campaign={"budget_usd": 0.5})
    else:
        rewrite_config(rd, crowd={"reward_usd": 0.05})
    res = rig.campaign(RunDir(rd.path)).run(max_rounds=3)
    rd = RunDir(rd.path)
    b = assert_books_balance(rig, rd)
    hits = rd.read_rounds("hits")
    assert set(x["hit_id"] for x in published) <= set(hits["hit_id"])
    asg = rd.read_rounds("assignments")
    first = asg[asg["hit_round"] == 1]
    assert len(first) == len([a for a in b["api"] if a["HITId"] in {x["hit_id"] for x in published}])
    assert (first.loc[first["approved"], "reward_cents"] == 20).all()
    if change == "budget":
        assert b["ledger"]["hits_created"] == created  # nothing published once over the lower cap
        assert res.stop_reason.startswith("budget reached")
    else:
        later = hits[hits["round"] > 1]
        assert len(later) and later["reward_cents"].max() == 5


def test_a_hit_created_but_not_recorded_is_adopted_under_a_lowered_cap(sample_run, tmp_path, rigs):
    """Killed between CreateHIT and recording its id, then the budget is lowered: the HIT may exist,
    so it is looked up and adopted (its work recorded and paid), never left to MTurk."""
    rd = clone(sample_run, tmp_path / "r", crowd=FAST, campaign={"budget_usd": 1.5})
    rig = rigs(rd)
    crowd = rig.crowd(rd)
    real = crowd.backend.client.create_hit_with_hit_type
    made = []

    def create(**kw):
        out = real(**kw)
        made.append(out["HIT"]["HITId"])
        if len(made) == 2:
            raise Crash("killed after CreateHIT")
        return out
    crowd.backend.client.create_hit_with_hit_type = create
    with pytest.raises(Crash):
        rig.campaign(rd, crowd).run()
    assert [("hit_id" in x) for x in rd.journal_lines(1, "published")] == [False, True, False]
    rewrite_config(rd, campaign={"budget_usd": 0.2})  # under what the two live HITs can cost
    rig.campaign(RunDir(rd.path)).run(max_rounds=2)
    rd = RunDir(rd.path)
    assert sorted(rd.read_rounds("hits")["hit_id"]) == sorted(made)
    b = assert_books_balance(rig, rd)
    assert b["ledger"]["hits_created"] == 2 and len(b["api"]) == 2


# ------------------------------------------------------------------------------------------------ 4
def test_work_submitted_after_its_round_closed_is_recorded_paid_and_counted(sample_run, tmp_path, rigs):
    """Half the workers accept a HIT and submit only after its round timed out and expired it."""
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.5})
    rig = rigs(rd, late_share=0.5, late_delay=10 ** 6)

    def sleep(_):
        if RunDir(rd.path).rounds():  # a round is committed: its late workers submit now, 10 min after accepting
            rig.clock.advance(600)
            rig.local.work(late=True)
    rig.campaign(rd, sleep=sleep).run(max_rounds=3)
    rd = RunDir(rd.path)
    b = assert_books_balance(rig, rd)
    asg = rd.read_rounds("assignments")
    late = asg[asg["round"] > asg["hit_round"]]
    assert len(late) >= 2 and late["approved"].all() and (late["reward_cents"] > 0).all()
    ans = rd.read_rounds("answers")
    mine = ans[ans["assignment_id"].isin(late["assignment_id"])]
    assert len(mine) and mine["used"].all()
    assert (mine["round"].to_numpy() == late.set_index("assignment_id").loc[mine["assignment_id"], "round"]).all()
    hits = rd.read_rounds("hits")
    assert hits.loc[hits["hit_id"].isin(late["hit_id"]), "expired"].all()  # they came after expiry
    assert set(rd.read_rounds("hits_done")["hit_id"]) == set(hits["hit_id"])  # every HIT closed in the books
    assert b["charged_cents"] > 0


def test_work_submitted_between_expiry_and_the_end_of_its_round_is_not_lost(sample_run, tmp_path, rigs):
    """Every worker is late and submits right after the round expires the HITs, before the round
    decides which HITs are done: nothing is pending or open on them any more, but their work is
    not recorded yet, so they are not done; a later round records it."""
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.5})
    rig = rigs(rd, late_share=1.0, late_delay=10 ** 6)
    crowd = rig.crowd(rd)
    real = crowd.expire

    def expire(hit_id):
        real(hit_id)
        rig.clock.advance(600)
        rig.local.work(late=True)  # the late workers submit now
    crowd.expire = expire
    rig.campaign(rd, crowd).run(max_rounds=2)
    rd = RunDir(rd.path)
    b = assert_books_balance(rig, rd)
    asg = rd.read_rounds("assignments")
    assert len(asg) == len(b["api"]) > 0 and (asg["round"] > asg["hit_round"]).all()
    done = rd.read_rounds("hits_done")
    assert (done["round"] > done["hit_round"]).all()


# ------------------------------------------------------------------------------------------------ 5, 6
def test_work_approved_by_mturk_while_the_controller_was_stopped_is_recorded(sample_run, tmp_path, rigs):
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.0})
    rig = rigs(rd)
    interrupted(rig, rd)
    rig.clock.advance(4 * 86400)  # stopped longer than [mturk] auto_approval_delay_s (3 days)
    auto = rig.local.ledger()["approvals"]
    assert auto > 0 and rig.local.ledger()["approve_calls"] == 0
    rig.campaign(RunDir(rd.path)).run(max_rounds=1)
    rd = RunDir(rd.path)
    b = assert_books_balance(rig, rd, month_later=False)
    asg = rd.read_rounds("assignments")
    assert (asg["settled_by"] == "mturk").sum() == auto and asg["approved"].all()
    assert b["ledger"]["approve_calls"] == 0  # nothing approved twice, nothing approved again
    assert int(rd.read_rounds("spend")["cents"].sum()) == b["charged_cents"]


def test_a_rejection_overtaken_by_mturks_approval_is_reconciled(sample_run, tmp_path, rigs, capsys):
    """crowdprop journaled a rejection and died; MTurk approved the work on its own meanwhile.
    The next run records it as MTurk holds it (approved, paid; its answers unused) and goes on."""
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 1.0})
    rig = rigs(rd)
    crowd = rig.crowd(rd)
    real = crowd.settle
    rejected = []

    def judge(a, n_gold, n_gold_correct, n_questions, cfg):  # the rules reject the first assignment
        return (False, "answers to known items were wrong", "sorry") if not rejected and not judged else (True, None, None)
    judged = []

    def settle(aid, approve, feedback=None):
        judged.append(aid)
        if not approve:
            rejected.append(aid)
            raise Crash(aid)  # the rejection is journaled, the process dies before sending it
        return real(aid, approve, feedback)
    crowd.settle = settle
    with pytest.raises(Crash):
        rig.campaign(rd, crowd, judge=judge).run()
    [aid] = rejected
    assert any(x.get("assignment_id") == aid and x["approve"] is False for x in rd.journal_lines(1, "settled"))
    rig.clock.advance(4 * 86400)
    assert main(["run", str(rd.path), "--endpoint-url", rig.url, "--rounds", "1"]) == 0
    assert "stopped after --rounds" in capsys.readouterr().out
    rd = RunDir(rd.path)
    asg = rd.read_rounds("assignments").set_index("assignment_id")
    row = asg.loc[aid]
    assert row["approved"] and not row["judged_ok"] and row["settled_by"] == "mturk"
    assert row["reward_cents"] == 20 and row["fee_cents"] == 4
    ans = rd.read_rounds("answers")
    assert not ans.loc[ans["assignment_id"] == aid, "used"].any()
    assert_books_balance(rig, rd, month_later=False)


# ------------------------------------------------------------------------------------------------ 7
def test_the_budget_guard_stops_publishing_without_an_error(sample_run, tmp_path, rigs):
    """The backend's guard refusing a HIT ends publishing for the round, not the run."""
    rd = clone(sample_run, tmp_path / "r", simulation=PERFECT, crowd=FAST, campaign={"budget_usd": 2.0})
    rig = rigs(rd)
    crowd = rig.crowd(rd)

    class Tight(BudgetGuard):  # a cap of its own, tighter than the loop's: room for 2 HITs of 24 c
        def update(self, committed_cents, cap_cents=None):
            super().update(committed_cents)
    crowd.backend.guard = Tight(cap_cents=50)
    res = rig.campaign(rd, crowd).run(max_rounds=1)
    rd = RunDir(rd.path)
    assert res.rounds_run == 1 and len(rd.read_rounds("hits")) == 2
    assert_books_balance(rig, rd)


def test_budget_exhausted_is_no_error_and_exits_0(monkeypatch, capsys):
    import crowdprop.commands.run as run_cmd

    def spent(args):
        raise BudgetExhausted("budget: HIT t could cost $0.24, and $0.96 of the $1.00 cap is spent or committed; "
                              "not published")
    monkeypatch.setattr(run_cmd, "run", spent)
    assert main(["run", "somewhere"]) == 0
    err = capsys.readouterr().err
    assert "error" not in err and err.strip() == ("crowdprop run: budget: HIT t could cost $0.24, and $0.96 of the "
                                                  "$1.00 cap is spent or committed; not published")


def test_gold_import_takes_the_run_lock(sample_run, tmp_path, capsys):
    rd = clone(sample_run, tmp_path / "r")
    before = (rd.path / "golds.parquet").read_bytes()
    m = int(rd.masks["mask_id"].iloc[0])
    golds = tmp_path / "g.csv"
    golds.write_text(f"mask_id,label\n{m},yes\n")
    other = FileLock(rd.path / ".lock", timeout=0)  # another process's `crowdprop run`
    with other:
        (rd.path / LOCK_OWNER).write_text("pid 4242 on elsewhere")
        assert main(["gold", "import", str(rd.path), str(golds)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "already in use" in err and "pid 4242" in err
        assert (rd.path / "golds.parquet").read_bytes() == before
    assert main(["gold", "import", str(rd.path), str(golds)]) == 0
    assert (rd.path / "golds.parquet").read_bytes() != before
