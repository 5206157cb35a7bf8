"""Two `crowdprop run` on one run directory: exactly one does the work, the other is refused
(exit 2, one line) before it changes anything, and the final state is the one a single run
makes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from crowdprop.campaign.export import final_status
from crowdprop.campaign.store import RunDir

from .conftest import clone, import_benchmark, tree_digest

REFUSED = "already in use by another crowdprop process"


def crowdprop(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crowdprop", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def test_two_simultaneous_runs_one_works_one_is_refused(sample_run, tmp_path):
    bc = import_benchmark("bench_crash")
    ref = clone(sample_run, tmp_path / "ref")
    rd = clone(sample_run, tmp_path / "run")
    # the endpoint answers every request after 40 ms, so the campaign holds its lock for seconds
    ep_ref = bc.Endpoint(ref.path, tmp_path, extra=["--latency", "0.04"])
    ep = bc.Endpoint(rd.path, tmp_path, extra=["--latency", "0.04"])
    try:
        a = crowdprop("run", str(rd.path), "--endpoint-url", ep.url)
        b = crowdprop("run", str(rd.path), "--endpoint-url", ep.url)
        r = crowdprop("run", str(ref.path), "--endpoint-url", ep_ref.url)
        results = [(p.wait(300), *p.communicate()) for p in (a, b)]
        assert r.wait(300) == 0
        led = ep.ledger()
    finally:
        ep.stop()
        ep_ref.stop()
    codes = sorted(c for c, _, _ in results)
    assert codes == [0, 2], results
    (_, out_ok, _), (_, _, err_refused) = sorted(results, key=lambda x: x[0])
    assert "stopped: no candidates left" in out_ok
    assert len(err_refused.strip().splitlines()) == 1 and REFUSED in err_refused and "Traceback" not in err_refused
    # the state is the single run's: contiguous rounds, no journal left, the same accepted set
    run = RunDir(rd.path)
    assert run.rounds() == list(range(1, len(run.rounds()) + 1))
    assert not any((rd.path / "journal").glob("round=*"))
    np.testing.assert_array_equal(final_status(run), final_status(RunDir(ref.path)))
    hits = run.read_rounds("hits")
    assert led["hits_created"] == hits["token"].nunique() == len(hits) and led["approved_more_than_once"] == []


def _hold_lock(path):
    code = ("import sys, time\nfrom crowdprop.campaign.store import RunDir\n"
            f"with RunDir({str(path)!r}).lock():\n    print('locked', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_refused_run_changes_nothing_in_the_run_dir(sample_run, tmp_path):
    """Regression: the refused process used to record its --endpoint-url in campaign.json (the
    running campaign's HITs live at the other one), and a mturk-local run deleted the journal
    of the round in progress, before the lock refused them."""
    rd = clone(sample_run, tmp_path / "mturk")
    camp = json.loads((rd.path / "campaign.json").read_text())
    camp["crowd"] = {"kind": "mturk", "target": "local", "endpoint_url": "http://127.0.0.1:8443"}
    (rd.path / "campaign.json").write_text(json.dumps(camp))
    local = clone(sample_run, tmp_path / "local", {"kind": "mturk-local", "images": "skip"})
    for run in (rd, local):  # a round in progress
        run.journal_append(1, "published", {"token": "t", "event": "create"})
    holders = [_hold_lock(rd.path), _hold_lock(local.path)]
    try:
        before = {r.path: tree_digest(r.path) for r in (rd, local)}
        runs = [crowdprop("run", str(rd.path), "--endpoint-url", "http://127.0.0.1:9"),
                crowdprop("run", str(local.path))]
        for p, run in zip(runs, (rd, local)):
            code = p.wait(120)
            _, err = p.communicate()
            assert code == 2 and REFUSED in err and len(err.strip().splitlines()) == 1, err
            assert tree_digest(run.path) == before[run.path]
    finally:
        for h in holders:
            h.kill()
            h.wait()
