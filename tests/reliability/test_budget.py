"""The budget cap binds: over random campaigns (reward, assignments per HIT 1..9, questions and
golds per HIT, a cap a few HITs wide), what the endpoint charged (rewards + MTurk fees; the loop
sends no bonuses) and what RUN_DIR/spend says never pass the cap by a cent, and the run stops
saying why."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdprop.campaign.ledger import hit_cost_estimate, record_action
from crowdprop.campaign.loop import Campaign
from crowdprop.crowd.base import Fees
from crowdprop.crowd.factory import local_endpoint_backend
from crowdprop.hits.batching import reward_cents_for
from crowdprop.money import cap_cents, fmt

from .conftest import clone

LOCAL = {"kind": "mturk-local", "images": "skip"}


@st.composite
def campaigns(draw):
    qph = draw(st.integers(4, 60))
    crowd = dict(questions_per_hit=qph, golds_per_hit=draw(st.integers(0, min(6, qph - 1))),
                 assignments_per_hit=draw(st.integers(1, 9)), reward_usd=draw(st.integers(1, 80)) / 100)
    # the cap: a few full HITs and a part of one (so it binds mid-round), with sub-cent remainders
    hit = Fees().hit_cost_cents(round(crowd["reward_usd"] * 100), crowd["assignments_per_hit"])
    n = draw(st.integers(0, 8))
    part = draw(st.floats(0.0, 0.999))
    budget = math.floor((n + part) * hit) / 100 + draw(st.sampled_from([0.0, 0.004, 0.005, 0.006]))
    return crowd, max(0.01, round(budget, 3))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(campaigns())
def test_spend_never_passes_the_cap(sample_run, tmp_path_factory, case):
    crowd_cfg, budget = case
    rd = clone(sample_run, tmp_path_factory.mktemp("budget") / "r", LOCAL, crowd=crowd_cfg,
               campaign={"budget_usd": budget})
    crowd = local_endpoint_backend(rd)
    try:
        res = Campaign(rd, crowd, progress=False).run()
        led = crowd.local.ledger()
    finally:
        crowd.close()
    cap = cap_cents(budget)  # the cap in whole cents, rounded down (0.505 -> 50)
    kinds = {e["kind"] for e in led["entries"]}
    assert kinds <= {"reward", "fee"}  # the loop pays no bonuses
    charged = sum(e["cents"] for e in led["entries"])
    assert charged <= cap, (charged, budget)  # not a cent over, from the endpoint's ledger
    spend = rd.read_rounds("spend")
    spent = int(spend["cents"].sum()) if len(spend) else 0
    assert spend["cents"].dtype == np.int64 if len(spend) else True
    assert spent == charged  # the run directory's books are the endpoint's, to the cent
    assert led["tokens_with_several_hits"] == [] and led["approved_more_than_once"] == []

    reward = reward_cents_for(crowd_cfg["questions_per_hit"], rd.config.crowd)
    a = crowd_cfg["assignments_per_hit"]
    full_hit = Fees().hit_cost_cents(reward, a)
    if res.stop_reason.startswith("budget reached"):
        # stopped cleanly, saying how much of the cap was spent, because no full HIT fits anymore
        assert f"${budget:.2f}" in res.stop_reason and f"{fmt(spent)} of" in res.stop_reason
        assert cap - spent < full_hit
    else:
        assert res.stop_reason == "no candidates left"
    if cap < full_hit and cap < a * 2:  # not even the smallest HIT (1 cent + 1 cent fee) fits
        assert charged == 0 and rd.rounds() == []


def test_hit_cost_estimate_is_what_the_remaining_budget_buys(sample_run, tmp_path):
    """What ``crowdprop run --target production`` prints before publishing: the cap (rounded down to a
    cent) less what was paid, in full HITs of every assignment approved with MTurk's fee."""
    rd = clone(sample_run, tmp_path / "r", crowd=dict(questions_per_hit=20, golds_per_hit=2, assignments_per_hit=3,
                                                      reward_usd=0.07), campaign={"budget_usd": 1.009})
    # 7 cents reward + 1 cent fee (20 % of 7 rounded half up, at least 1), 3 assignments: 24 cents a HIT
    assert hit_cost_estimate(rd) == {"spent_usd": 0.0, "remaining_usd": 1.0, "hit_usd": 0.24, "reward_usd": 0.07,
                                     "fee_usd": 0.01, "hits": 4, "questions_per_hit": 20, "assignments": 3}
    # a bonus sent with `crowdprop bonus` is paid; one MTurk refused is not
    record_action(rd, {"action": "bonus", "id": "b1", "event": "send", "bonus_cents": 30, "fee_cents": 6})
    record_action(rd, {"action": "bonus", "id": "b2", "event": "send", "bonus_cents": 50, "fee_cents": 10})
    record_action(rd, {"id": "b2", "event": "refused", "code": "RequestError"})
    e = hit_cost_estimate(rd)
    assert (e["spent_usd"], e["remaining_usd"], e["hits"]) == (0.36, 0.64, 2)
    record_action(rd, {"action": "bonus", "id": "b3", "event": "send", "bonus_cents": 70, "fee_cents": 14})
    e = hit_cost_estimate(rd)
    assert (e["spent_usd"], e["remaining_usd"], e["hits"]) == (1.2, 0.0, 0)  # over the cap: nothing left

    # 13 cents reward + 3 cents fee (20 % of 13 is 2.6, rounded half up), 9 assignments: 144 cents a HIT;
    # $2.879 caps at 287 cents (rounded down), one HIT short of two
    rd9 = clone(sample_run, tmp_path / "r9", crowd=dict(questions_per_hit=20, golds_per_hit=2,
                                                        assignments_per_hit=9, reward_usd=0.13),
                campaign={"budget_usd": 2.879})
    e = hit_cost_estimate(rd9)
    assert (e["fee_usd"], e["hit_usd"], e["remaining_usd"], e["hits"]) == (0.03, 1.44, 2.87, 1)
