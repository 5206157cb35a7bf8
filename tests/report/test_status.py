"""crowdprop status on a finished campaign and on one killed in the middle of a round."""
from __future__ import annotations

import json
import math
import os
import time

import pandas as pd
import pytest

from crowdprop.crowd.factory import simulated_backend
from crowdprop.campaign.export import final_status
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.commands import status as status_cmd
from crowdprop.commands.replay import sample_paths
from crowdprop.report.summary import compute_report


from faults import Crash, Flaky  # noqa: E402


def status_json(run, capsys) -> dict:
    assert main(["status", str(run.path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> RunDir:
    """The shipped sample, killed while settling the 9th assignment (in round 2)."""
    preds, gt, cfg = sample_paths()
    rd = init_run(tmp_path_factory.mktemp("killed") / "run", predictions=preds, gt=gt, config_path=cfg,
                  crowd={"kind": "simulated"})
    with pytest.raises(Crash):
        Campaign(rd, Flaky(simulated_backend(rd), "settle", 9), progress=False).run()
    return RunDir(rd.path)


def test_status_of_a_finished_run(sample_run, capsys):
    st = status_json(sample_run, capsys)
    spend = pd.read_parquet(sample_run.path / "state" / "spend")
    n_rounds = len(list((sample_run.path / "state" / "questions").glob("round-*.parquet")))
    final = final_status(sample_run)
    assert st["last_round"] == n_rounds and st["in_progress"] is None
    # the sample leaves small clusters under K_pa open when no candidate is left: the campaign
    # records that stop after its last round, and status calls the run finished with masks open
    assert st["open"] > 0
    assert sample_run.campaign["stopped"] == {"reason": "no candidates left", "after_round": n_rounds}
    assert st["finished"]
    assert st["cents"] == spend["cents"].sum() and st["usd"] == spend["cents"].sum() / 100
    decided, open_ = int((final >= 0).sum()), int((final < 0).sum())
    assert (st["decided"], st["open"]) == (decided, open_) and decided + open_ == len(final)
    assert main(["status", str(sample_run.path)]) == 0
    text = capsys.readouterr().out
    assert f"round: {n_rounds} committed" in text
    assert f"masks: {decided} decided, {open_} open of {len(final)}" in text
    assert f"spend: ${spend['cents'].sum() / 100:.2f} of $" in text
    assert st["stopped"] == "no candidates left"
    assert f"to finish: nothing more to ask (no candidates left); {open_} masks stay open" in text


def test_status_of_a_round_in_progress(killed, capsys):
    journal = sorted((killed.path / "journal").glob("round=*"))
    assert len(journal) == 1
    r = int(journal[0].name.split("=")[1])
    committed = killed.rounds()
    assert committed == list(range(1, r))
    pub = [json.loads(x) for x in (journal[0] / "published.jsonl").read_text().splitlines()]
    received = pd.read_parquet(journal[0] / "received.parquet")
    settled = [json.loads(x) for x in (journal[0] / "settled.jsonl").read_text().splitlines()]
    questions = pd.read_parquet(journal[0] / "questions.parquet")
    spend = pd.read_parquet(killed.path / "state" / "spend")
    paid = sum(s["reward_cents"] + s["fee_cents"] for s in settled if s["approve"])  # cents
    assert paid > 0

    # round durations: commits 100 s apart, the round in progress started 30 s ago
    now = time.time()
    os.utime(killed.path / "trees" / "nodes.parquet", (now - 100 * (len(committed) + 1),) * 2)
    for i, k in enumerate(committed, start=1):
        p = killed.round_path("questions", k)  # its commit time
        os.utime(p, (now - 100 * (len(committed) + 1) + 100 * i,) * 2)
    for p in journal[0].iterdir():
        os.utime(p, (now - 30,) * 2)

    st = status_json(killed, capsys)
    ip = st["in_progress"]
    assert st["last_round"] == r - 1 and ip["round"] == r and not st["finished"]
    assert ip["hits_planned"] == questions["token"].nunique() and ip["questions"] == len(questions)
    assert ip["hits_published"] == len({x["token"] for x in pub if "hit_id" in x})
    assert ip["assignments_received"] == received["assignment_id"].nunique()
    assert ip["settled"] == len(settled) and ip["approved"] == sum(s["approve"] for s in settled)
    assert st["cents_committed"] == spend["cents"].sum()
    assert st["cents"] == spend["cents"].sum() + paid and st["usd"] == st["cents"] / 100
    rows = compute_report(killed)["rounds"]
    decided = rows[-1]["accepted"] + rows[-1]["rejected"]
    assert (st["decided"], st["open"]) == (decided, rows[-1]["open"])
    rate = decided / len(committed)  # fewer than 3 rounds: the rate since the start
    assert st["rate_per_round"] == pytest.approx(rate)
    assert st["round_seconds"] == pytest.approx(100, abs=1)
    left = math.ceil(rows[-1]["open"] / rate)
    assert st["rounds_left"] == left
    assert st["eta_seconds"] == pytest.approx(max(0, left * 100 - 30), abs=3)

    assert main(["status", str(killed.path)]) == 0
    text = capsys.readouterr().out
    # killed: no process holds the run, and status says so rather than "in progress for ..."
    assert f"round {r} stopped part-way: no crowdprop process holds the run" in text and "in progress" not in text
    with killed.lock():  # a live `crowdprop run` holds it
        assert main(["status", str(killed.path)]) == 0
        text = capsys.readouterr().out
    assert f"round {r} in progress for" in text
    assert f"{ip['hits_published']} of {ip['hits_planned']} HITs out" in text
    assert f"${paid / 100:.2f} of it in round {r}" in text


def test_watch_refreshes_until_ctrl_c(killed, capsys, monkeypatch):
    naps = []

    def sleep(s):
        naps.append(s)
        if len(naps) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(status_cmd.time, "sleep", sleep)
    assert main(["status", str(killed.path), "--watch", "0.5"]) == 0
    out = capsys.readouterr().out
    assert naps == [0.5, 0.5]
    assert out.count("campaign ") == 2  # two screens
    naps.clear()
    assert main(["status", "--watch", str(killed.path)]) == 0  # --watch without seconds before RUN_DIR
    assert naps == [10.0, 10.0] and capsys.readouterr().out.count("campaign ") == 2
    assert "\x1b[" not in out  # no ANSI when stdout is not a terminal
    assert main(["status", str(killed.path), "--watch", "0"]) == 2
