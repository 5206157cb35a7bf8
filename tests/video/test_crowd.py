"""Video HITs with simulated workers: golds, the quality rules, votes over assignments, money (no torch)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowdprop.campaign.ledger import FEES
from crowdprop.video.config import load
from crowdprop.video.crowd import hit_reward_cents, run_questions, simulated_workers
from crowdprop.video.run import human_labels

N_CLASSES = 4


def _setup(tmp_path, budget=100.0, assignments=3):
    cfg = load(None, {"crowd": {"questions_per_hit": 12, "golds_per_hit": 3, "assignments_per_hit": assignments,
                                "reward_usd": 0.10},
                      "quality": {"soft_block_after": 2, "block_below_accuracy": 0.0, "qualification_size": 0},
                      "simulation": {"workers": 12, "accuracy": 0.8, "accuracy_spread": 0.0, "spammer_share": 0.25},
                      "campaign": {"budget_usd": budget}})
    rng = np.random.default_rng(4)
    truth = rng.integers(-1, N_CLASSES, 200)
    questions = pd.DataFrame({"question": np.arange(200), "region": np.arange(200), "frame": np.arange(200) // 20,
                              "truth": truth})
    golds = pd.DataFrame({"region": np.arange(200, 230), "frame": 0, "truth": rng.integers(0, N_CLASSES, 30),
                          "used": 0})
    return cfg, questions, golds, truth


def test_votes_rules_and_money(tmp_path):
    cfg, questions, golds, truth = _setup(tmp_path)
    workers = simulated_workers(cfg.simulation, seed=0)
    spam = {w.worker for w in workers if w.kind == "spammer"}
    assert len(spam) == 3
    ans, asg, spent = run_questions(questions, golds, workers, cfg, round_=1, rng=np.random.default_rng(0),
                                    spent_cents=0, history=None, n_classes=N_CLASSES)
    assert ans.loc[ans["kind"] == "label", "question"].nunique() == len(questions)  # everything asked
    per_hit = asg.groupby("hit")["worker"].agg(["size", "nunique"])
    assert (per_hit["size"] == 3).all() and (per_hit["nunique"] == 3).all()
    # spammers answer fast: rejected, blocked after soft_block_after (2) rejections
    assert not asg.loc[asg["worker"].isin(spam), "approved"].any()
    assert asg.loc[asg["worker"].isin(spam)].groupby("worker").size().max() <= cfg.quality.soft_block_after
    # money: integer cents, reward pro rata + MTurk's fee per approved assignment only
    ok = asg.loc[asg["approved"]]
    expect = sum(hit_reward_cents(q, cfg.crowd) + FEES.assignment_fee_cents(hit_reward_cents(q, cfg.crowd), 3)
                 for q in ok["questions"])
    assert spent == expect == int(ok["reward_cents"].sum() + ok["fee_cents"].sum())
    assert (asg.loc[~asg["approved"], ["reward_cents", "fee_cents"]] == 0).all().all()
    # golds: 3 per HIT, least used first (30 golds: the first 10 HITs use each once)
    g = ans.loc[ans["kind"] == "gold"].drop_duplicates(["hit", "question", "region"])
    assert (g.groupby("hit").size() == 3).all()
    assert g.loc[g["hit"] <= 10, "region"].is_unique and g.loc[g["hit"] <= 10, "region"].nunique() == 30
    # votes of three 80 % workers beat one answer
    regions = np.arange(200).reshape(1, 1, 200)
    lab = human_labels(regions, ans)[0, 0]
    single = ans.loc[(ans["kind"] == "label") & ans["approved"]].drop_duplicates("question")
    acc_one = (single["answer"].to_numpy() == truth[single["region"]]).mean()
    voted = lab >= 0
    acc_vote = (lab[voted] == truth[voted]).mean()
    assert acc_one < 0.9 and acc_vote > acc_one + 0.05 and voted.sum() > 100


def test_budget_cap_stops_hits(tmp_path):
    cfg, questions, golds, _ = _setup(tmp_path, budget=1.0, assignments=1)
    workers = simulated_workers(cfg.simulation, seed=0)
    ans, asg, spent = run_questions(questions, golds, workers, cfg, round_=1, rng=np.random.default_rng(0),
                                    spent_cents=40, history=None, n_classes=N_CLASSES)
    assert 40 + spent <= 100
    per = hit_reward_cents(12, cfg.crowd) + FEES.assignment_fee_cents(hit_reward_cents(12, cfg.crowd), 1)
    assert 40 + spent + per > 100  # it stopped because the next HIT would pass the cap
    assert ans.loc[ans["kind"] == "label", "question"].nunique() < len(questions)


def test_ask_again_where_answers_disagree_or_the_lone_worker_is_not_trusted():
    from crowdprop.video.crowd import ask_again, worker_accuracy

    cfg = load(None, {"video": {"vote": "adaptive", "vote_max": 3, "vote_trust": 0.9}})
    questions = pd.DataFrame({"question": [10, 11, 12, 13, 14, 15], "region": np.arange(6), "frame": 0, "truth": 0})
    rows = [(10, "good", 1, True),                       # one answer, trusted worker: stands
            (11, "new", 1, True),                        # one answer, worker with few golds: again
            (12, "good", 1, True), (12, "good2", 2, True),   # two that disagree: again
            (13, "good", 1, True), (13, "good2", 1, True),   # two that agree: stand
            (14, "good", 1, True), (14, "good2", 2, True), (14, "new", 3, True),  # three: vote_max reached
            (15, "good", 1, False)]                      # only a rejected answer: the rules re-ask it, not the vote
    ans = pd.DataFrame([{"question": q, "worker": w, "answer": a, "approved": ok, "kind": "label"}
                        for q, w, a, ok in rows])
    asg = pd.DataFrame({"worker": ["good", "good2", "new"], "golds": [20, 20, 2], "golds_correct": [20, 19, 2]})
    acc = worker_accuracy(asg)
    assert acc["good"] == pytest.approx(21 / 22) and acc["new"] == pytest.approx(3 / 4)
    again, exclude = ask_again(questions, ans, asg, cfg.video)
    assert again == [1, 2]  # positions of questions 11 and 12
    assert exclude == {1: {"new"}, 2: {"good", "good2"}}
    cfg.video.vote_trust = 0.7
    assert ask_again(questions, ans, asg, cfg.video)[0] == [2]


def test_adaptive_vote_asks_fewer_than_three_and_labels_better_than_one(tmp_path):
    """80 %-accurate workers: the adaptive vote asks a region again only where needed, never of the
    same worker, and its labels are more often right than one answer's, for fewer clicks than three."""
    out = {}
    for name, apH, vote in (("one", 1, "fixed"), ("three", 3, "fixed"), ("adaptive", 1, "adaptive")):
        cfg, questions, golds, truth = _setup(tmp_path, assignments=apH)
        cfg.video.vote, cfg.video.vote_trust = vote, 0.8  # 80 % workers with 6 golds of 6 right are trusted
        cfg.simulation.spammer_share = 0.0
        workers = simulated_workers(cfg.simulation, seed=0)
        ans, asg, spent = run_questions(questions, golds, workers, cfg, round_=1, rng=np.random.default_rng(0),
                                        spent_cents=0, history=None, n_classes=N_CLASSES)
        lab = ans.loc[(ans["kind"] == "label") & ans["approved"]]
        labels = human_labels(np.arange(200).reshape(1, 1, 200), ans)[0, 0]
        done = labels >= 0
        out[name] = {"clicks": len(lab), "right": int((labels[done] == truth[done]).sum()), "spent": spent,
                     "per_region": lab.groupby("question").size()}
        assert not lab.duplicated(["question", "worker"]).any()  # nobody answers a region twice
    one, three, ad = out["one"], out["three"], out["adaptive"]
    assert ad["per_region"].max() <= 3 and (ad["per_region"] > 1).any() and (ad["per_region"] == 1).any()
    assert one["clicks"] < ad["clicks"] < three["clicks"] and ad["spent"] < three["spent"]
    assert ad["right"] >= one["right"] + 8 and ad["right"] >= three["right"]  # 136 against 125 and 134
