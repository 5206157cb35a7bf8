"""SIGKILL the controller at chosen and at random moments of a campaign whose local MTurk
endpoint is a separate process; rerun it each time; nothing lost, nothing paid twice.

Five kills (benchmarks/bench_crash.py runs fifty): between CreateHIT and its record,
between an approval and its record, in the middle of a Parquet write, and two seeded
random (function, call) moments.
"""
from __future__ import annotations

from .conftest import import_benchmark


def test_five_sigkills_lose_nothing_and_change_nothing(tmp_path):
    bc = import_benchmark("bench_crash")
    res = bc.crash_suite(kills=5, per_campaign=5, seed=7, work=tmp_path, log=lambda *a: None)
    camp = res["campaigns"][0]
    # the process died (SIGKILL) at the three chosen moments first, then at random ones; a random
    # moment the campaign finished before is made up for in another campaign
    assert camp.moments[:3] == [f"{h}#{k}" for h, k in bc.SPECIFIC], camp.problems
    t = res["total"]
    assert t.kills == 5
    assert t.problems == []
    assert t.duplicates == 0  # one HIT per UniqueRequestToken, no HIT unknown to the run directory
    assert t.lost == 0 and t.double_counted == 0  # every endpoint assignment once, its answers once
    assert t.unsettled == 0  # nothing left Submitted on the endpoint
    assert t.double_approved == 0 and t.books_differ == 0  # endpoint money == RUN_DIR spend
    assert t.overspend_usd == 0.0
    assert t.identical  # the accepted set of an uninterrupted run with the same seed


def test_the_kill_hooks_fire_where_they_say(tmp_path, sample_run):
    """The wrapper really dies at the k-th call: a run killed at the 3rd CreateHIT has journaled
    3 tokens, 2 with a HIT id, and the endpoint holds 3 HITs."""
    import shutil
    import signal

    bc = import_benchmark("bench_crash")
    run_dir = tmp_path / "run"
    shutil.copytree(sample_run.path, run_dir)
    ep = bc.Endpoint(run_dir, tmp_path)
    try:
        p = bc.controller(run_dir, ep.url, {"hook": "publish.after", "k": 3})
        assert p.returncode == -signal.SIGKILL
        from crowdprop.campaign.store import RunDir

        lines = RunDir(run_dir).journal_lines(1, "published")
        assert [("hit_id" in x) for x in lines] == [False, True, False, True, False]
        assert ep.ledger()["hits_created"] == 3
    finally:
        ep.stop()
