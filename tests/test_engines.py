"""crowdprop init on an engine: the run directory is the same, byte for byte, in one process,
in worker processes and on Ray (local, 2 CPUs); bad input is the same one line on each."""
import json
from pathlib import Path

import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.cli import main
from crowdprop.masks import jsonstream


def _tree(d: Path) -> dict:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "campaign.json":
                c = json.loads(data)
                c.pop("created")
                data = json.dumps(c).encode()
            out[str(p.relative_to(d))] = data
    return out


@pytest.fixture
def small_pieces(monkeypatch):
    from crowdprop.tree import build

    monkeypatch.setattr(jsonstream, "BLOCK", 4096)  # many reading tasks even for the sample
    monkeypatch.setattr(build, "TASK_MASKS", 100)  # and many tree tasks


def _init(tmp_path, name, *extra):
    rc = main(["init", str(tmp_path / name), "--predictions", str(RESULTS_JSON), "--gt", str(GT_JSON),
               "--crowd", "simulated", "--config", str(tmp_path / "c.toml"), *extra])
    assert rc == 0
    return _tree(tmp_path / name)


@pytest.fixture
def config(tmp_path):
    # small exact_max so the scalable (random) tree build runs too
    (tmp_path / "c.toml").write_text("[tree]\nexact_max = 40\nmicro_size = 16\n")


def test_worker_processes_write_the_same_run_directory(tmp_path, small_pieces, config):
    one = _init(tmp_path, "one", "--workers", "1")
    two = _init(tmp_path, "two", "--workers", "2")
    assert one.keys() == two.keys() and "trees/nodes.parquet" in one
    assert one == two


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_writes_the_same_run_directory_and_the_same_errors(tmp_path, small_pieces, config, local_ray, capsys):
    one = _init(tmp_path, "one", "--workers", "1")
    assert _init(tmp_path, "ray", "--engine", "ray", "--workers", "2") == one
    capsys.readouterr()
    # a JSON error found by a task, and a bad record: the same line as in one process
    bad = tmp_path / "bad.json"
    records = json.load(open(RESULTS_JSON))
    bad.write_text(json.dumps(records)[:-1] + ",]")
    records[300]["score"] = 3
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(records))
    seen = {}
    for preds in (bad, worse):
        lines = []
        for extra in (["--workers", "1"], ["--engine", "ray", "--workers", "2"]):
            rc = main(["init", str(tmp_path / "x"), "--predictions", str(preds), "--gt", str(GT_JSON), *extra])
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1
            lines.append(err[0])
        assert lines[0] == lines[1]
        assert not (tmp_path / "x").exists()
        seen[preds.name] = lines[0]
    assert "malformed JSON: Expecting value" in seen["bad.json"]
    assert "record 300" in seen["worse.json"] and "field 'score'" in seen["worse.json"]


def test_replay_runs_init_on_the_engine(tmp_path, small_pieces, config, monkeypatch, capsys):
    """crowdprop replay takes init's --engine and --workers: its run directory starts as
    init's does in one process (same tables, same trees)."""
    from crowdprop import engine

    used = []
    real_map = engine.ProcessEngine.map

    def spy(self, fn, items):
        used.append((fn.__name__, self.workers))
        return real_map(self, fn, items)

    monkeypatch.setattr(engine.ProcessEngine, "map", spy)
    one = _init(tmp_path, "one", "--workers", "1")
    assert used == []
    with open(tmp_path / "c.toml", "a") as f:
        f.write("[campaign]\nmax_rounds = 1\n")
    rc = main(["replay", "--run-dir", str(tmp_path / "rep"), "--predictions", str(RESULTS_JSON), "--gt", str(GT_JSON),
               "--crowd", "simulated", "--config", str(tmp_path / "c.toml"), "--workers", "2", "--json"])
    assert rc == 0
    assert {name for name, _ in used} >= {"_predictions_task", "_annotations_task", "_match_task", "class_trees"}
    assert {w for _, w in used} == {2}
    rep = _tree(tmp_path / "rep")
    for name in ("masks.parquet", "gt.parquet", "golds.parquet", "trees/nodes.parquet", "trees/order.parquet"):
        assert rep[name] == one[name], name
    capsys.readouterr()
    assert main(["replay", "--workers", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().endswith("field '--workers': must be >= 1, got 0")
