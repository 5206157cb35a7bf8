"""Settling by arrays (CrowdWork._settle with _Asked and _AnswerColumns) gives what settling
assignment by assignment gave: the same approvals, rejections, feedback, spend and answers.

``reference_answer_rows`` below is the code it replaced (a row tuple per answer for every
assignment, from a pandas copy of the HIT's questions), kept as the definition the new code is
checked against: whole campaigns run with each (``RowByRow`` in place of ``_AnswerColumns``) and
every round table compared; each HIT's questions and golds as arrays are checked against a
pandas groupby and filter of the round's questions.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.campaign import crowdwork
from crowdprop.campaign.crowdwork import ANSWER_COLUMNS, _AnswerColumns, _Asked
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.crowd.base import Assignment
from crowdprop.crowd.factory import simulated_backend


# ---------------------------------------------------------------- the code settling replaced
class RowByRow:
    """The answers table as settling built it before: a row tuple per answer, assignment by
    assignment, from a pandas copy of the HIT's questions (stands in for ``_AnswerColumns``)."""

    def __init__(self, r: int):
        self.r = r
        self.rows: list[tuple] = []

    def add(self, a: Assignment, hq: _Asked, usable: bool) -> None:
        self.rows += reference_answer_rows(self.r, a, hq.frame(), usable)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=ANSWER_COLUMNS)
        df["label"] = df["label"].astype(np.int8)
        return df


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
            m.setattr(crowdwork, "_AnswerColumns", RowByRow)
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
