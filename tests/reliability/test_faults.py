"""A campaign against an endpoint that throttles 20 % of requests, fails 5 % with HTTP 5xx
(half of them after the operation took effect: the response is lost) and answers slowly
ends exactly as one without faults, with the same books.

benchmarks/bench_faults.py measures the same with 200 ms latency and the default retry waits.
"""
from __future__ import annotations

import numpy as np
import pytest

from crowdprop.campaign.export import final_status
from crowdprop.campaign.loop import Campaign
from crowdprop.crowd.factory import mturk_backend
from crowdprop.crowd.targets import record_target, resolve_target
from crowdprop.mturk_local import FaultConfig, LocalMTurk, serve, truth_from_masks
from crowdprop.replay.workers import WorkerPool

from .conftest import clone


def campaign_on_endpoint(rd, faults: FaultConfig | None):
    cfg = rd.config
    truth = truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou)
    local = LocalMTurk(truth, WorkerPool.build(cfg.simulation, cfg.campaign.seed), faults=faults,
                       images_dir=rd.path / "hit_images")
    handle = serve(local)
    try:
        where = resolve_target(rd, endpoint_url=handle.url)
        record_target(rd, where)
        crowd = mturk_backend(rd, where, retry_wait_s=0.002)
        res = Campaign(rd, crowd, progress=False).run()
        crowd.close()
        return res, local.ledger(entries=False)
    finally:
        handle.stop()


def test_throttling_errors_lost_responses_and_latency_change_nothing(sample_run, tmp_path):
    ref = clone(sample_run, tmp_path / "ref")
    res0, led0 = campaign_on_endpoint(ref, None)
    rd = clone(sample_run, tmp_path / "faults")
    faults = FaultConfig(throttle_rate=0.20, error_rate=0.05, latency_s=0.005, seed=11, lost_response_share=0.5)
    res, led = campaign_on_endpoint(rd, faults)

    assert res0.stop_reason == res.stop_reason == "no candidates left"
    f = led["faults"]
    assert f["throttle"] >= 0.1 * f["requests"] and f["error"] >= 3 and f["lost_response"] >= 1  # faults happened
    status, status0 = final_status(rd), final_status(ref)
    assert (status0 >= 0).all()
    np.testing.assert_array_equal(status, status0)
    # same HITs, same assignments, same money: lost responses made no second HIT or approval
    for key in ("hits_created", "approvals", "spent_usd", "rewards_usd", "fees_usd", "assignments"):
        assert led[key] == led0[key], key
    assert led["tokens_with_several_hits"] == [] and led["approved_more_than_once"] == []
    assert round(float(led["spent_usd"]) * 100) == rd.read_rounds("spend")["cents"].sum()
    a, a0 = rd.read_rounds("answers"), ref.read_rounds("answers")
    cols = ["question_id", "mask_row", "label", "is_gold", "used"]
    assert a[cols].sort_values("question_id").reset_index(drop=True).equals(
        a0[cols].sort_values("question_id").reset_index(drop=True))


def test_an_endpoint_that_never_recovers_ends_the_run_without_damage(sample_run, tmp_path):
    """Every request throttled: the bounded retries give up, and a later run on a healthy
    endpoint finishes the campaign from where it was."""
    from botocore.exceptions import ClientError

    rd = clone(sample_run, tmp_path / "r")
    with pytest.raises(ClientError) as e:
        campaign_on_endpoint(rd, FaultConfig(throttle_rate=1.0, seed=1))
    assert "Throttling" in str(e.value)
    assert rd.rounds() == []


def test_unreachable_endpoint_is_one_line_exit_2_and_the_run_continues_later(sample_run, tmp_path, capsys):
    """Regression: a botocore error that outlived the retries ended `crowdprop run` with a traceback."""
    import socket

    from crowdprop.cli import main

    rd = clone(sample_run, tmp_path / "r", campaign={"budget_usd": 0.5})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert main(["run", str(rd.path), "--endpoint-url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"127.0.0.1:{port}" in err and "again to continue" in err
    assert rd.rounds() == []

    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed))
    with serve(local) as h:
        assert main(["run", str(rd.path), "--endpoint-url", h.url]) == 0
    assert "budget reached" in capsys.readouterr().out and rd.rounds()
