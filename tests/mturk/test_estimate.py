"""`crowdprop estimate`: simulated campaigns on the run's own predicted qualities, before any money
moves (a small synthetic set; the run directory is only read)."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.policy.controller import predicted_quality


def _digest(path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_estimate_reads_only_and_its_figures_hold_together(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--masks", "120", "--classes", "3", "-o", str(data), "-q"]) == 0
    assert main(["init", str(run), "--predictions", str(data / "predictions.json"), "--gt", str(data / "gt.json"),
                 "-q"]) == 0
    rd = RunDir(run)
    before = _digest(run)
    # the run's configuration with three workers per HIT and a bonus per gold right
    toml = tmp_path / "c.toml"
    toml.write_text("[campaign]\nmax_rounds = 3\n[crowd]\nassignments_per_hit = 3\nbonus_cents_per_gold_correct = 1\n")
    capsys.readouterr()
    assert main(["estimate", str(run), "--seeds", "2", "--json", "--config", str(toml)]) == 0
    est = json.loads(capsys.readouterr().out)
    assert _digest(run) == before and not (run / "state").exists()  # nothing of the run written
    runs = est["runs"]
    assert [r["seed"] for r in runs] == [rd.config.campaign.seed, rd.config.campaign.seed + 1]
    q = predicted_quality(rd.masks, rd.config.policy.quality)
    for r in runs:
        # truth drawn from predicted quality: the share correct is the mean quality, up to sampling noise
        assert abs(r["true_share"] - q.mean()) < 4 * np.sqrt(0.25 / len(q))
        assert r["questions"] > 0 and r["hits"] > 0 and r["worker_hours"] > 0
        assert r["assignments"] == 3 * r["hits"]  # three workers per HIT, every HIT answered
        assert r["bonus_usd"] > 0
        assert round(100 * r["usd"]) == round(100 * (r["reward_usd"] + r["fee_usd"] + r["bonus_usd"]))
        assert r["fee_usd"] >= 0.01 * r["assignments"] * 0.999  # MTurk's fee: at least 1 cent per assignment
        assert r["accepted"] + r["rejected"] + r["open"] == len(q) and r["rounds"] <= 3
    for k in ("questions", "usd", "worker_hours"):
        lo, hi = min(r[k] for r in runs), max(r[k] for r in runs)
        assert (est["low"][k], est["high"][k]) == (lo, hi)
        assert abs(est["mean"][k] - sum(r[k] for r in runs) / 2) < 1e-9

