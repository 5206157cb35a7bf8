"""``crowdprop mturk-local`` and the ground truth it serves."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from crowdprop.cli import main
from crowdprop.config import Config, SimulationSection
from crowdprop.io import write_parquet
from crowdprop.mturk_local import truth_from_run_dir
from crowdprop.replay.workers import WorkerPool

from .conftest import client_for, hit_kwargs

NS = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd}"
GT_IOU = [0.95, 0.80, 0.76, 0.75, 0.60, 0.40, np.nan, 0.99]


def _run_dir(tmp_path, *, correct_iou: float | None = None, workers: int = 5):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    masks = pd.DataFrame({"mask_id": np.arange(500, 500 + len(GT_IOU), dtype=np.int64),
                          "gt_iou": np.asarray(GT_IOU, dtype=np.float64)})
    write_parquet(run / "masks.parquet", masks)
    if correct_iou is not None:
        conf = Config()
        conf.campaign.correct_iou = correct_iou
        conf.simulation = dataclasses.replace(conf.simulation, workers=workers)
        (run / "config.json").write_text(conf.to_json())
    return run


def test_truth_from_run_dir_uses_the_runs_threshold(tmp_path):
    default = truth_from_run_dir(_run_dir(tmp_path / "a"))
    assert default == {500: True, 501: True, 502: True, 503: False, 504: False, 505: False, 506: False, 507: True}
    loose = truth_from_run_dir(_run_dir(tmp_path / "b", correct_iou=0.5))
    assert [loose[m] for m in range(500, 508)] == [True, True, True, True, True, False, False, True]


def test_command_refuses_bad_arguments(tmp_path, capsys):
    assert main(["mturk-local"]) == 2
    assert main(["mturk-local", "--run-dir", str(tmp_path), "--gt", "x.json", "--predictions", "y.json"]) == 2
    assert main(["mturk-local", "--run-dir", str(tmp_path)]) == 2  # no masks.parquet
    err = capsys.readouterr().err
    assert "masks.parquet" in err and "file not found" in err
    run = _run_dir(tmp_path / "c")
    assert main(["mturk-local", "--run-dir", str(run), "--throttle", "1.5"]) == 2
    assert "--throttle" in capsys.readouterr().err


def test_command_serves_until_interrupted(tmp_path):
    run = _run_dir(tmp_path, correct_iou=0.5, workers=4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crowdprop", "mturk-local", "--run-dir", str(run), "--port", "0",
                             "--seed", "9"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("local MTurk endpoint: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        c = client_for(url)
        qs = [(f"q{m}", m) for m in range(500, 508)]
        hit = c.create_hit(**hit_kwargs(qs, UniqueRequestToken="cli-1"))["HIT"]
        (a,) = c.list_assignments_for_hit(HITId=hit["HITId"])["Assignments"]
        # workers from the run's [simulation] table (4 workers) and --seed; truth at the run's threshold 0.5
        pool = WorkerPool.build(SimulationSection(workers=4), 9)
        w = pool.index(a["WorkerId"])
        truth = [True, True, True, True, True, False, False, True]
        want = [(q, "yes" if pool.answer(w, f"cli-1:{q}", t) else "no") for (q, _), t in zip(qs, truth)]
        root = ET.fromstring(a["Answer"])
        got = [(x.find(NS + "QuestionIdentifier").text, x.find(NS + "FreeText").text) for x in root]
        assert got == want
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "stopped: 1 HITs, 0 approvals" in out
