"""The run directory as a dataset: a replay's tables read with pandas, pyarrow.dataset (hive) and
DuckDB with their declared types, and their totals against report.json."""
from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crowdprop.campaign import tables as tbl
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main

DUCK_TYPES = {"int8": "TINYINT", "int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN",
              "string": "VARCHAR"}


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """The shipped sample replayed to the end with a simulated crowd."""
    run_dir = tmp_path_factory.mktemp("dataset") / "run"
    assert main(["replay", "--run-dir", str(run_dir), "--crowd", "simulated"]) == 0
    return run_dir


def duck(sql: str):
    return duckdb.sql(sql).fetchall()


def test_every_file_has_its_declared_schema_and_no_null_type(replay):
    files = {p.relative_to(replay).as_posix(): p for p in replay.rglob("*.parquet")}
    assert "labels.parquet" in files and "state/spend/round-00001.parquet" in files
    for rel, p in files.items():
        name = rel[:-len(".parquet")] if not rel.startswith("state/") else rel.split("/")[1]
        got = pq.read_schema(p)
        assert not any(pa.types.is_null(f.type) for f in got), rel
        assert got.equals(tbl.SCHEMAS[name], check_metadata=False), rel
    # the tables that are all null or empty in this replay still carry their types
    asg = pq.read_table(replay / "state/assignments/round-00001.parquet")
    assert asg.column("flag").null_count == len(asg) and asg.schema.field("flag").type == pa.string()
    assert pq.read_schema(replay / "state/blocks/round-00001.parquet").field("worker_id").type == pa.string()


@pytest.mark.parametrize("name", tbl.ROUND_TABLES)
def test_a_round_table_reads_alike_with_pandas_pyarrow_hive_and_duckdb(replay, name):
    rounds = json.loads((replay / "report.json").read_text())["total"]["rounds"]
    folder = replay / "state" / name
    assert sorted(p.name for p in folder.iterdir()) == [f"round-{r:05d}.parquet" for r in range(1, rounds + 1)]
    want = tbl.SCHEMAS[name]

    table = ds.dataset(folder, partitioning="hive").to_table()
    assert table.schema.equals(want, check_metadata=False)
    df = pd.read_parquet(folder)
    assert list(df.columns) == want.names and df["round"].dtype == np.int64
    assert len(df) == table.num_rows == len(RunDir(replay).read_rounds(name))

    glob = f"{folder}/**/*.parquet"
    for args in (", hive_partitioning=true", ""):
        desc = duck(f"DESCRIBE SELECT * FROM read_parquet('{glob}'{args})")
        assert [(c[0], c[1]) for c in desc] == [(f.name, DUCK_TYPES[tbl.type_name(f.type)]) for f in want]
        n, = duck(f"SELECT count(*) FROM read_parquet('{glob}'{args})")[0]
        assert n == len(df)
    if len(df):
        by_round = duck(f"SELECT round, count(*) FROM '{folder}/*.parquet' GROUP BY round ORDER BY round")
        assert by_round == sorted(df.groupby("round").size().items())


def test_totals_from_the_tables_match_report_json(replay):
    t = json.loads((replay / "report.json").read_text())["total"]
    s = f"{replay}/state"
    # money: integer cents, summed exactly
    (cents, rewards, fees), = duck(f"SELECT sum(cents), sum(cents) FILTER (kind = 'reward'), "
                                   f"sum(cents) FILTER (kind = 'fee') FROM '{s}/spend/*.parquet'")
    assert isinstance(cents, int) and cents > 0
    assert (cents, rewards, fees) == (round(t["usd"] * 100), round(t["usd_rewards"] * 100), round(t["usd_fees"] * 100))
    (paid,), = duck(f"SELECT sum(reward_cents + fee_cents) FROM '{s}/assignments/*.parquet' WHERE approved")
    assert paid == cents
    (questions, golds), = duck(f"SELECT count(*) FILTER (NOT is_gold), count(*) FILTER (is_gold) "
                               f"FROM '{s}/answers/*.parquet' WHERE used")
    assert (questions, golds) == (t["questions"], t["golds"])
    assert duck(f"SELECT count(*) FROM '{s}/hits/*.parquet'") == [(t["hits"],)]
    labels = pd.read_parquet(replay / "labels.parquet")
    counts = labels["label"].value_counts()
    assert (counts.get("accepted", 0), counts.get("rejected", 0), counts.get("open", 0)) == \
        (t["accepted"], t["rejected"], t["open"]) and t["accepted"] > 0
    for src, fig in t["by_source"].items():
        mine = labels[labels["source"] == src]["label"].value_counts()
        assert (mine.get("accepted", 0), mine.get("rejected", 0)) == (fig["accepted"], fig["rejected"]), src


def test_labels_and_mask_ids(replay):
    masks = pd.read_parquet(replay / "masks.parquet")
    labels = pd.read_parquet(replay / "labels.parquet")
    assert labels["mask_row"].tolist() == list(range(len(masks)))
    for c in ("mask_id", "image_id", "category_id"):
        assert labels[c].tolist() == masks[c].tolist()
    rounds = json.loads((replay / "report.json").read_text())["total"]["rounds"]
    open_ = labels["label"] == "open"
    assert (labels.loc[open_, "round"] == 0).all() and (labels.loc[open_, "source"] == "none").all()
    assert labels.loc[~open_, "round"].between(1, rounds).all()
    # a mask labeled by its own answers has one in the round that labeled it
    answers = pd.read_parquet(replay / "state" / "answers")
    direct = labels[labels["source"] == "direct"]
    asked = answers[answers["used"] & ~answers["is_gold"]][["mask_row", "round"]].drop_duplicates()
    assert len(direct) and len(direct.merge(asked, on=["mask_row", "round"])) == len(direct)
    # every table that names a mask by its row carries its id
    for name in ("answers", "questions", "audits", "verdicts", "golds", "trees/order"):
        df = pd.read_parquet(replay / "state" / name) if name in tbl.ROUND_TABLES else \
            pd.read_parquet(replay / f"{name}.parquet")
        row = df["row"] if name == "trees/order" else df["mask_row"]
        assert df["mask_id"].tolist() == masks["mask_id"].to_numpy()[row.to_numpy()].tolist(), name


def test_the_feedback_sent_to_workers_outlives_the_journal(replay, tmp_path):
    from crowdprop.crowd.factory import simulated_backend
    from crowdprop.campaign.loop import Campaign

    run = tmp_path / "run"
    shutil.copytree(replay, run, ignore=shutil.ignore_patterns("state", "journal", "report*", "labels.parquet"))
    rd = RunDir(run)
    backend = simulated_backend(rd)
    sent, settle = {}, backend.settle

    def recording(aid, approve, feedback=None):
        sent[aid] = (approve, feedback)
        return settle(aid, approve, feedback)

    backend.settle = recording

    judged = []

    def judge(a, n_gold, n_ok, n_q, cfg):  # every other assignment rejected, with a note for its worker
        judged.append(a.assignment_id)
        ok = len(judged) % 2 == 1
        return ok, None if ok else "every other one", "thanks" if ok else "rejected: every other one"

    Campaign(rd, backend, progress=False, judge=judge).run(max_rounds=1)
    assert not (run / "journal").exists()
    asg = pd.read_parquet(run / "state" / "assignments")
    assert len(asg) == len(sent) and {a for a, _ in sent.values()} == {True, False}
    got = {a: (ok, fb) for a, ok, fb in zip(asg["assignment_id"], asg["approved"], asg["feedback"])}
    assert got == sent
    labels = pd.read_parquet(run / "labels.parquet")  # rewritten at the commit
    assert set(labels["label"]) >= {"accepted"} and labels["round"].max() == 1


def test_labels_are_written_at_init_all_open(replay, tmp_path):
    from crowdprop.campaign.init import init_run
    from crowdprop.commands.replay import sample_paths

    preds, gt, cfg = sample_paths()
    rd = init_run(tmp_path / "run", predictions=preds, gt=gt, config_path=cfg, crowd={"kind": "simulated"},
                  progress=False)
    labels = pd.read_parquet(rd.path / "labels.parquet")
    assert len(labels) == len(rd.masks) and set(labels["label"]) == {"open"} and set(labels["round"]) == {0}
    assert json.loads((rd.path / "campaign.json").read_text())["schema_version"] == tbl.SCHEMA_VERSION


@pytest.mark.parametrize("version", [None, 1, 3])
def test_a_run_directory_of_another_schema_version_is_one_line(replay, tmp_path, capsys, version):
    run = tmp_path / "run"
    shutil.copytree(replay, run)
    camp = json.loads((run / "campaign.json").read_text())
    camp.pop("schema_version")
    if version is not None:
        camp["schema_version"] = version
    (run / "campaign.json").write_text(json.dumps(camp))
    for argv in (["status", str(run)], ["report", str(run)], ["run", str(run), "--rounds", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(run / "campaign.json") in err, err
        assert f"schema version {version or 1} " in err and f"reads version {tbl.SCHEMA_VERSION} only" in err, err


def test_the_docs_describe_every_table_and_column():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "run-directory.md").read_text()
    for name in tbl.COLUMNS:
        assert tbl.markdown(name) in doc, name


def test_committed_round_tables_are_read_once_and_again_when_replaced(replay, tmp_path, monkeypatch):
    """A campaign reloads its state every round: a committed round's table is read from disk once
    per RunDir; a file replaced on disk (size or modification time changed) is read again."""
    import shutil

    from crowdprop.campaign import store

    d = tmp_path / "copy"
    shutil.copytree(replay, d)
    rd = RunDir(d)
    calls = []
    real = store.read_table
    monkeypatch.setattr(store, "read_table", lambda p, name=None: calls.append(p) or real(p, name))
    first = rd.read_rounds("answers")
    n_files = len(calls)
    assert n_files == len(rd.rounds()) > 1
    again = rd.read_rounds("answers")
    assert len(calls) == n_files  # nothing read again
    pd.testing.assert_frame_equal(first, again)
    again.loc[:, "label"] = 0  # what a caller does with its frame does not reach the cache
    pd.testing.assert_frame_equal(rd.read_rounds("answers"), first)
    # round 1's file replaced by a shorter one: read again, and the new rows come back
    p = rd.round_path("answers", 1)
    one = real(p, "answers")
    store.write_table(p, "answers", one.iloc[:3])
    fresh = rd.read_rounds("answers")
    assert len(calls) == n_files + 1
    assert len(fresh) == len(first) - len(one) + 3
