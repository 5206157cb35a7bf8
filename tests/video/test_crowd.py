"""Video HITs with simulated workers: golds, the quality rules, votes over assignments, money (no torch)."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
