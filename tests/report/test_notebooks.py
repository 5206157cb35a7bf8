"""The analysis notebooks execute (nbclient, the python3 kernel of this interpreter),
compute the same figures as the Parquet state and show every plot inline (a PNG output
per plotting cell, no warning on stderr); they are stored without outputs."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdprop.campaign.export import final_status

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, monkeypatch, **env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
                            ).execute()
    return nb


def plotting_cells(nb) -> list[int]:
    """Indexes of the code cells that draw a figure."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "plt.show()" in c.source]


def assert_shows_figures(nb, n_plots: int) -> None:
    """Every plotting cell displays a PNG (the inline backend, not Agg), and no cell writes to stderr
    (tqdm's "IProgress not found", matplotlib's "non-interactive backend" warnings)."""
    cells = plotting_cells(nb)
    assert len(cells) == n_plots
    for i in cells:
        pngs = [o for o in nb.cells[i].outputs if o.output_type == "display_data" and "image/png" in o.data]
        assert len(pngs) == 1, f"cell {i} shows {len(pngs)} figures"
        png = base64.b64decode(pngs[0].data["image/png"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000  # a drawn figure, not an empty canvas
    stderr = [(i, o.text) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []


@pytest.mark.parametrize("name", ["campaign_analysis", "tune_policy"])
def test_notebooks_are_stored_without_outputs(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_campaign_analysis_recomputes_the_report(sample_run, tmp_path, monkeypatch):
    out = tmp_path / "analysis.json"
    nb = execute("campaign_analysis", monkeypatch, CROWDPROP_RUN_DIR=sample_run.path, CROWDPROP_NB_OUT=out)
    assert_shows_figures(nb, 2)
    got = json.loads(out.read_text())
    rep = json.loads((sample_run.path / "report.json").read_text())["total"]
    for key in ("accepted", "rejected", "questions", "golds", "usd", "hits"):
        assert got["totals"][key] == pytest.approx(rep[key]), key
    masks = pd.read_parquet(sample_run.path / "masks.parquet")
    cats = pd.read_parquet(sample_run.path / "categories.parquet")
    names = dict(zip(cats["id"], cats["name"]))
    final = final_status(sample_run)
    want = pd.Series(final == 1).groupby(masks["category_id"].map(names).to_numpy()).sum()
    assert got["per_class_accepted"] == {k: int(v) for k, v in want.items()}
    ass = pd.read_parquet(sample_run.path / "state" / "assignments")
    g = ass.groupby("worker_id")[["n_gold", "n_gold_correct"]].sum()
    acc = (g["n_gold_correct"] + 1) / (g["n_gold"] + 2)
    assert got["gold_accuracy"] == pytest.approx(acc.to_dict())


def test_tune_policy_sweeps_and_matches_a_plain_replay(sample_run, tmp_path, monkeypatch):
    out = tmp_path / "sweep.json"
    nb = execute("tune_policy", monkeypatch, CROWDPROP_NB_OUT=out)
    assert_shows_figures(nb, 1)
    sweep = pd.DataFrame(json.loads(out.read_text()))
    assert set(sweep["param"]) == {"accept", "k", "k_pa"} and len(sweep) >= 7
    cfg = json.loads((sample_run.path / "config.json").read_text())["policy"]
    rep = json.loads((sample_run.path / "report.json").read_text())["total"]
    default = sweep[[v == cfg[p] for p, v in zip(sweep["param"], sweep["value"])]]
    # the sample's own settings reproduce `crowdprop replay` of the sample (same seed)
    assert len(default) == 3
    for key in ("questions", "accepted", "usd", "true_precision"):
        assert np.allclose(default[key].to_numpy(float), rep[key]), key
    assert np.allclose(sweep["masks_per_question"], sweep["accepted"] / sweep["questions"])
    # a stricter K_pa asks fewer questions (clusters under it are skipped)
    kpa = sweep[sweep["param"] == "k_pa"].sort_values("value")
    assert kpa["questions"].is_monotonic_decreasing and kpa["questions"].iloc[-1] < kpa["questions"].iloc[0]
