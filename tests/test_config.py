"""The configuration: every section typed, every resolved value kept in RUN_DIR/config.json, a
campaign resumed from it (not from the defaults of the version installed later), and errors that
name the user's TOML file and key."""
import dataclasses
import json
import textwrap

import pandas as pd
import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop import config as config_mod
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.errors import InputError

TOML = textwrap.dedent("""\
    [campaign]
    seed = 5
    [policy]
    accept = 0.9
    [quality]
    aggregation = "onecoin"
    [mturk]
    locale = ["US", "CA"]
    """)


def _init(tmp_path, capsys, toml: str = TOML) -> tuple[int, str, object]:
    conf = tmp_path / "campaign.toml"
    conf.write_text(toml)
    run_dir = tmp_path / "run"
    code = main(["init", str(run_dir), "--predictions", str(RESULTS_JSON), "--gt", str(GT_JSON),
                 "--crowd", "simulated", "--config", str(conf)])
    return code, capsys.readouterr().err, run_dir


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """A campaign initialised from :data:`TOML` with the defaults of this version."""
    tmp = tmp_path_factory.mktemp("cfg")
    conf = tmp / "campaign.toml"
    conf.write_text(TOML)
    run_dir = tmp / "run"
    assert main(["init", str(run_dir), "--predictions", str(RESULTS_JSON), "--gt", str(GT_JSON),
                 "--crowd", "simulated", "--config", str(conf)]) == 0
    return run_dir


def _with_default(cls, **defaults):
    """``cls`` as a later version might define it: the same keys, other defaults."""
    return dataclasses.make_dataclass(cls.__name__, [(k, type(v), dataclasses.field(default=v))
                                                     for k, v in defaults.items()], bases=(cls,))


def test_every_resolved_value_is_written(started):
    stored = json.loads((started / "config.json").read_text())
    assert set(stored) == {"campaign", "policy", "crowd", "simulation", "features", "tree", "quality", "mturk"}
    for name, cls in config_mod.SECTIONS.items():
        expected = dataclasses.asdict(cls())
        assert set(stored[name]) == set(expected), name
        changed = {k for k in expected if stored[name][k] != expected[k]}
        assert changed == {"campaign": {"seed"}, "policy": {"accept"}, "quality": {"aggregation"},
                           "mturk": {"locale"}}.get(name, set()), name
    assert (stored["campaign"]["seed"], stored["policy"]["accept"]) == (5, 0.9)
    assert (stored["quality"]["aggregation"], stored["mturk"]["locale"]) == ("onecoin", ["US", "CA"])
    cfg = RunDir(started).config
    assert isinstance(cfg.quality, config_mod.QualitySection) and isinstance(cfg.mturk, config_mod.MTurkSection)
    assert cfg == config_mod.load(started.parent / "campaign.toml")


def test_a_resumed_campaign_keeps_the_values_it_started_with(started, monkeypatch, capsys):
    # a later version changes defaults of keys the user did not set
    monkeypatch.setitem(config_mod.SECTIONS, "policy", _with_default(config_mod.PolicySection, k=7))
    monkeypatch.setitem(config_mod.SECTIONS, "quality", _with_default(config_mod.QualitySection, soft_block_after=9))
    monkeypatch.setitem(config_mod.SECTIONS, "mturk", _with_default(config_mod.MTurkSection, region="eu-west-1"))
    fresh = config_mod.load(None)
    assert (fresh.policy.k, fresh.quality.soft_block_after, fresh.mturk.region) == (7, 9, "eu-west-1")
    # (a config.json without the key would take the new default)
    stored = json.loads((started / "config.json").read_text())
    del stored["policy"]["k"]
    assert config_mod.from_dict(stored, "config.json").policy.k == 7

    assert main(["run", str(started), "--rounds", "1"]) == 0
    cfg = RunDir(started).config
    assert (cfg.policy.k, cfg.quality.soft_block_after, cfg.mturk.region) == (15, 2, "us-east-1")
    assert (cfg.policy.accept, cfg.quality.aggregation) == (0.9, "onecoin")
    # the round asked k = 15 masks of each candidate larger than min_cluster_size (15), not 7
    q = pd.read_parquet(started / "state" / "questions" / "round-00001.parquet")
    per_cluster = q[q["kind"] == "cluster"].groupby("node_id").size()
    forest = RunDir(started).forest
    large = (forest.end - forest.start)[per_cluster.index.to_numpy()] > cfg.policy.min_cluster_size
    assert large.sum() >= 2 and set(per_cluster[large]) == {15}


@pytest.mark.parametrize("toml, section, key", [
    ("[quality]\naggregation = \"vote\"\n", "[quality]", "aggregation"),
    ("[mturk]\nlocale = \"US\"\n", "[mturk]", "locale"),
    ("[mturk]\nreward = 0.5\n", "[mturk]", "reward"),
    ("[policy]\nk = 1.5\n", "[policy]", "k"),
])
def test_errors_name_the_toml_file_and_key(tmp_path, capsys, toml, section, key):
    code, err, run_dir = _init(tmp_path, capsys, toml)
    line = err.strip()
    assert code == 2 and len(line.splitlines()) == 1 and "Traceback" not in err
    assert line.startswith(f"crowdprop init: error: {tmp_path / 'campaign.toml'}: {section}: field '{key}': ")
    assert "config.json" not in line and not run_dir.exists()


@pytest.mark.parametrize("data, where", [
    ({"extra": {"quality": {}}}, "[extra]"),  # the raw tables of earlier versions
    ({"mturk": {"locale": ["US", 1]}}, "field 'locale'"),
    ({"quality": []}, "[quality]"),
    ([], "expected a table of sections"),
])
def test_config_json_is_checked_like_a_toml(data, where):
    with pytest.raises(InputError) as e:
        config_mod.from_dict(data, "run/config.json")
    assert str(e.value).startswith("run/config.json: ") and where in str(e.value)
