"""Settling by arrays (CrowdWork._settle with _Asked and _AnswerColumns) gives what settling
assignment by assignment gave: the same approvals, rejections, feedback, spend and answers.

``reference_settle`` and ``reference_answer_rows`` below are the code it replaced (a pandas filter of
the HIT's questions and a row tuple per answer for every assignment), kept as the definition the
new code is checked against: whole campaigns run with each, and every round table compared.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.campaign import ledger
from crowdprop.campaign.crowdwork import (ANSWER_COLUMNS, ASSIGNMENT_COLUMNS, AUTO_NOTE, SPEND_COLUMNS, HitInfo,
                                          _AnswerColumns, _Asked)
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.crowd.base import Assignment
from crowdprop.crowd.factory import simulated_backend
from crowdprop.money import fmt

log = __import__("logging").getLogger("crowdprop.campaign.crowdwork")


# ---------------------------------------------------------------- the code settling replaced
def reference_settle(self, r: int, infos: dict[str, HitInfo], assignments: list[Assignment]):
    """Judge, journal and settle every assignment received; the round's assignments, answers
    and spend tables (late work included, counted in round ``r``)."""
    run = self.run_dir
    settled = ledger.journal_settlements(run, r)
    ass_rows, ans_rows, spend_rows = [], [], []
    for a in assignments:
        info = infos.get(a.hit_id)
        if info is None:
            continue  # a HIT this directory does not own (never happens: polled ids are infos)
        q = info.questions
        gold = q[q["is_gold"].astype(bool)]
        n_gold_ok = 0
        if a.flag is None:
            for qid, lab in zip(gold["question_id"], gold["gold_label"]):
                if qid in a.answers and bool(a.answers[qid]) == bool(lab):
                    n_gold_ok += 1
        reward = a.reward_cents if a.reward_cents is not None else info.reward_cents
        if reward != info.reward_cents:
            log.warning("HIT %s: MTurk reports a reward of %s, published with %s; MTurk's figure is recorded",
                        a.hit_id, fmt(reward), fmt(info.reward_cents))
        fee = self.fees.assignment_fee_cents(reward, info.assignments)
        rec = settled.get(a.assignment_id)
        if rec is None:
            ok, reason, feedback = self.judge(a, len(gold), n_gold_ok, len(q), self.cfg)
            rec = {"assignment_id": a.assignment_id, "approve": bool(ok), "judged_ok": bool(ok), "reason": reason,
                   "feedback": feedback, "reward_cents": int(reward), "fee_cents": int(fee), "by": "crowdprop"}
            if a.status in ("Approved", "Rejected"):  # MTurk settled it before we did
                rec.update(approve=a.status == "Approved", by="mturk",
                           reason=(AUTO_NOTE if a.status == "Approved" else "rejected outside crowdprop")
                           + ("" if ok else f"; the rules would have rejected it: {reason}"))
            run.journal_append(r, "settled", rec)
        final = ledger.final_state(rec)
        sent = None  # the message the worker gets with our approval or rejection
        if rec.get("by") != "mturk":
            approve = bool(rec["approve"])
            sent = rec.get("feedback") if approve else (rec.get("reason") or "rejected")
            state = self.backend.settle(a.assignment_id, approve, sent)
            state = state or ("Approved" if approve else "Rejected")
            if state != final:
                note = AUTO_NOTE if state == "Approved" else "rejected on MTurk before crowdprop's approval"
                log.warning("assignment %s: crowdprop decided to %s it, MTurk holds it %s (%s); recorded as "
                            "MTurk holds it", a.assignment_id, "approve" if approve else "reject", state, note)
                run.journal_append(r, "settled", {"assignment_id": a.assignment_id, "final": state, "note": note})
                rec = {**rec, "final": state, "note": note}
                final = state
        approved = final == "Approved"
        judged_ok = bool(rec.get("judged_ok", rec.get("approve")))
        reason = rec.get("reason")
        if rec.get("note") and rec["note"] not in (reason or ""):
            reason = f"{reason}; {rec['note']}" if reason else rec["note"]
        by_mturk = rec.get("by") == "mturk" or (rec.get("final") == "Approved" and not rec["approve"])
        settled_by = "mturk" if by_mturk else "crowdprop"
        paid_reward = int(rec.get("reward_cents", reward)) if approved else 0
        paid_fee = int(rec.get("fee_cents", fee)) if approved else 0
        ass_rows.append((a.assignment_id, a.hit_id, info.token, a.worker_id, r, info.round, len(q), len(gold),
                         n_gold_ok, float(a.work_seconds), a.flag, approved, judged_ok, settled_by, reason,
                         sent, paid_reward, paid_fee))
        if approved:
            spend_rows.append((r, a.assignment_id, "reward", paid_reward))
            spend_rows.append((r, a.assignment_id, "fee", paid_fee))
            spend_rows += self._gold_bonus(r, a, n_gold_ok if judged_ok else 0, infos)
        usable = judged_ok and a.flag is None
        ans_rows += reference_answer_rows(r, a, q, usable)
    ass_df = pd.DataFrame(ass_rows, columns=ASSIGNMENT_COLUMNS)
    for c in ("flag", "reason", "feedback"):
        ass_df[c] = ass_df[c].astype(object)
    ans_df = pd.DataFrame(ans_rows, columns=ANSWER_COLUMNS)
    ans_df["label"] = ans_df["label"].astype(np.int8)
    spend_df = pd.DataFrame(spend_rows, columns=SPEND_COLUMNS)
    spend_df["cents"] = spend_df["cents"].astype(np.int64)
    return ass_df, ans_df, spend_df



def reference_answer_rows(r: int, a: Assignment, q: pd.DataFrame, usable: bool) -> list[tuple]:
    """One row per question of ``a``'s HIT it answered: the mask the worker was shown."""
    from crowdprop.campaign.evidence import answer_kinds

    out = []
    for qid, mrow, is_gold, kind in zip(q["question_id"], q["mask_row"], q["is_gold"], answer_kinds(q)):
        if qid in a.answers:
            out.append((qid, r, int(mrow), a.worker_id, a.assignment_id, a.hit_id, int(bool(a.answers[qid])),
                        bool(is_gold), usable, str(kind)))
    return out



# ---------------------------------------------------------------- the tests
TABLES = ["questions", "hits", "assignments", "answers", "spend", "hits_done", "decisions", "blocks", "verdicts"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The sample with three assignments per HIT from a crowd of spammers, sloppy and ordinary
    workers (rejections with their feedback, blocks) and a gold bonus (bonus spend rows)."""
    root = tmp_path_factory.mktemp("settle")
    cfg = root / "c.toml"
    cfg.write_text("[policy]\nk_pa = 0.0\n[campaign]\nbudget_usd = 60.0\n"
                   "[crowd]\nquestions_per_hit = 20\ngolds_per_hit = 6\nassignments_per_hit = 3\n"
                   "bonus_cents_per_gold_correct = 1\n"
                   "[simulation]\nworkers = 30\nspammer_share = 0.5\nsloppy_share = 0.2\n")
    return init_run(root / "base", predictions=RESULTS_JSON, gt=GT_JSON, crowd={"kind": "simulated"}, seed=5,
                    config_path=cfg)


def _campaign(base: RunDir, dest, monkeypatch, reference: bool) -> RunDir:
    rd = RunDir(shutil.copytree(base.path, dest))
    with monkeypatch.context() as m:
        if reference:
            m.setattr(Campaign, "_settle", reference_settle)
        Campaign(rd, simulated_backend(rd), progress=False).run(max_rounds=4)
    return RunDir(rd.path)


def test_a_campaign_settled_by_arrays_is_the_campaign_settled_one_by_one(base, tmp_path, monkeypatch):
    new = _campaign(base, tmp_path / "new", monkeypatch, reference=False)
    ref = _campaign(base, tmp_path / "ref", monkeypatch, reference=True)
    assert new.rounds() == ref.rounds() and len(new.rounds()) >= 3
    for name in TABLES:
        a, b = new.read_rounds(name), ref.read_rounds(name)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    asg = new.read_rounds("assignments")
    # the case is one that exercises settling: rejections with feedback, approvals, bonuses
    assert (~asg["approved"]).sum() >= 3 and asg["approved"].sum() >= 10
    assert asg.loc[~asg["approved"], "feedback"].notna().all()
    spend = new.read_rounds("spend")
    assert set(spend["kind"]) == {"reward", "fee", "bonus", "bonus_fee"}
    ans = new.read_rounds("answers")
    assert (~ans["used"]).any() and ans["used"].any() and ans["is_gold"].any()


def test_answer_columns_for_partial_flagged_and_empty_work():
    """Assignments that answer a part of their HIT, none of it, or all of it in another order:
    the same rows, in the same order and with the same types, as the row-by-row code."""
    q = pd.DataFrame({"question_id": [f"q{i}" for i in range(6)], "mask_row": np.arange(10, 16, dtype=np.int64),
                      "is_gold": [False, True, False, False, True, False],
                      "gold_label": [None, 1, None, None, 0, None],
                      "kind": ["cluster", "gold", "random", "active", "gold", "audit"], "token": "tok"})
    works = [
        Assignment("A1", "H1", "W1", {f"q{i}": bool(i % 2) for i in reversed(range(6))}, 3.0),
        Assignment("A2", "H1", "W2", {"q4": True, "q0": False, "zz": True}, 3.0),
        Assignment("A3", "H1", "W3", {}, 3.0),
        Assignment("A4", "H1", "W4", {"q5": True}, 3.0, flag="unknown question"),
    ]
    hq = _Asked.of(q)
    assert hq.golds == [("q1", 1), ("q4", 0)] and hq.n == 6
    cols = _AnswerColumns(4)
    rows = []
    for a, usable in zip(works, [True, False, True, False]):
        cols.add(a, hq, usable)
        rows += reference_answer_rows(4, a, q, usable)
    want = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    want["label"] = want["label"].astype(np.int8)
    got = cols.frame()
    assert len(got) == 6 + 2 + 0 + 1
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    empty = pd.DataFrame([], columns=ANSWER_COLUMNS)
    empty["label"] = empty["label"].astype(np.int8)
    pd.testing.assert_frame_equal(_AnswerColumns(1).frame(), empty)


def test_each_hit_takes_its_rows_of_the_rounds_questions_as_a_groupby_gives_them():
    from crowdprop.campaign.crowdwork import _QuestionArrays

    rs = np.random.default_rng(2)
    tokens = rs.choice(["t-a", "t-b", "t-c"], size=40)
    q = pd.DataFrame({"question_id": [f"q{i}" for i in range(40)], "mask_row": rs.integers(0, 99, 40),
                      "is_gold": rs.random(40) < 0.3, "gold_label": rs.integers(0, 2, 40).astype(np.int8),
                      "kind": "cluster", "token": tokens}, index=np.arange(100, 140))
    table = _QuestionArrays(q)
    for t, g in q.groupby("token"):
        hq = table.hit(t)
        pd.testing.assert_frame_equal(hq.frame(), g.reset_index(drop=True))
        assert hq.qids == g["question_id"].tolist() and hq.n == len(g)
        assert hq.golds == list(zip(g.loc[g["is_gold"], "question_id"], g.loc[g["is_gold"], "gold_label"]))
    none = table.hit("t-z")
    assert none.n == 0 and none.golds == [] and list(none.frame().columns) == list(q.columns)
