"""The budget cap binds: over random campaigns (reward, assignments per HIT 1..9, questions and
golds per HIT, a cap a few HITs wide), what the endpoint charged (rewards + MTurk fees; the loop
sends no bonuses) and what RUN_DIR/spend says never pass the cap by a cent, and the run stops
saying why."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdprop.campaign import backends as bk
from crowdprop.campaign.loop import Campaign
from crowdprop.crowd.base import Fees
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
    crowd = bk.local_endpoint_backend(rd)
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
