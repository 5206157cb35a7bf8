"""Fixtures of the reliability tests: one run directory of the shipped sample per session,
copied for each test; the machine's AWS credentials kept out."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from crowdprop.campaign.init import init_run
from crowdprop.campaign.store import RunDir
from crowdprop.commands.replay import sample_paths  # noqa: F401
from crowdprop.io import atomic_write_text


def legacy_sample_paths():
    from importlib.resources import files

    d = files("crowdprop.data")
    return str(d / "sample_predictions.json"), str(d / "sample_gt.json"), str(d / "sample_campaign.toml")


REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def import_benchmark(name: str):
    """A module of benchmarks/ (they are scripts, not a package)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return __import__(name)


@pytest.fixture(autouse=True)
def _no_credentials(no_aws_credentials):
    """Every reliability test runs without the machine's AWS credentials."""


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> RunDir:
    """``crowdprop init --crowd mturk`` of the shipped sample (trees built once)."""
    # The earlier sample (734 cocoapi results, one class per HIT page of 50 questions): these tests
    # count HITs, rewards and workers on it; the real-photo sample changes those counts, not the rules.
    preds, gt, config = legacy_sample_paths()
    return init_run(tmp_path_factory.mktemp("sample") / "run", predictions=preds, gt=gt, config_path=config,
                    crowd={"kind": "mturk", "target": "sandbox"}, progress=False)


def clone(base: RunDir, dest: Path, who: dict | None = None, **sections) -> RunDir:
    """A copy of ``base`` with another crowd and some config sections changed (not those shaping the trees)."""
    shutil.copytree(base.path, dest)
    cfg = base.config
    cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **kw)
                                      for name, kw in sections.items()})
    atomic_write_text(dest / "config.json", cfg.to_json())
    if who is not None:
        atomic_write_text(dest / "campaign.json", json.dumps(dict(base.campaign, crowd=who), indent=2,
                                                             sort_keys=True))
    return RunDir(dest)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (folders as '<dir>')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
