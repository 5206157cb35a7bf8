"""What a round reads and writes at scale: the masks table without its RLE strings, the forest
straight into NumPy, labels.parquet written only when the labels changed."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crowdprop.campaign import tables as tbl
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.errors import StateError
from crowdprop.schema import MASK_COLUMNS
from crowdprop.tree import Forest


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """The shipped sample replayed with a simulated crowd."""
    run_dir = tmp_path_factory.mktemp("scale") / "run"
    assert main(["replay", "--run-dir", str(run_dir), "--crowd", "simulated"]) == 0
    return run_dir


@pytest.fixture
def run(replay, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(replay, d)
    return d


def test_mask_meta_is_the_masks_table_without_its_rle_strings(run):
    full = pd.read_parquet(run / "masks.parquet")
    rd = RunDir(run)
    assert rd.n_masks == len(full) > 0 and "mask_meta" not in rd.__dict__  # from the file's footer
    meta = rd.mask_meta
    assert list(meta.columns) == [c for c in MASK_COLUMNS if c != "rle"]
    pd.testing.assert_frame_equal(meta, full.drop(columns="rle"))
    # the RLE strings read afterwards complete the same table, columns in file order
    pd.testing.assert_frame_equal(rd.masks, full)
    assert rd.mask_ids.tolist() == full["mask_id"].tolist()
    # read the other way round: mask_meta is the full table already in memory
    rd2 = RunDir(run)
    assert rd2.masks is rd2.mask_meta


def test_a_masks_table_missing_a_column_is_one_line_for_either_read(run):
    t = pq.read_table(run / "masks.parquet").drop_columns(["gt_iou"])
    pq.write_table(t, run / "masks.parquet")
    for attr in ("mask_meta", "masks"):
        with pytest.raises(StateError, match=r"masks.parquet: field 'gt_iou': column missing"):
            getattr(RunDir(run), attr)


def _state(run):
    from crowdprop.campaign.loop import load_state

    return load_state(RunDir(run))


def test_labels_are_written_only_when_they_change(run):
    st = _state(run)
    rd = RunDir(run)
    # the run wrote these labels after its last round: the file is left as it is
    before = (run / "labels.parquet").stat().st_mtime_ns
    assert rd.write_labels(st.final, st.source, st.decided_round) is False
    assert (run / "labels.parquet").stat().st_mtime_ns == before
    # one mask changes: written, with exactly that change
    final = st.final.copy()
    source = st.source.copy()
    decided = st.decided_round.copy()
    k = 0
    final[k], source[k], decided[k] = (0 if final[k] == 1 else 1), 3, 7
    assert rd.write_labels(final, source, decided) is True
    got = pd.read_parquet(run / "labels.parquet")
    want = "rejected" if final[k] == 0 else "accepted"
    assert (got.loc[k, "label"], got.loc[k, "source"], got.loc[k, "round"]) == (want, "direct", 7)
    names = {-1: "open", 0: "rejected", 1: "accepted"}
    assert got["label"].tolist() == [names[int(v)] for v in final]
    assert got["source"].tolist() == [tbl.SOURCE_NAMES[int(v)] for v in source]
    assert got["round"].tolist() == decided.tolist()
    assert got["mask_id"].tolist() == pd.read_parquet(run / "masks.parquet")["mask_id"].tolist()
    assert rd.write_labels(final, source, decided) is False
    assert RunDir(run).write_labels(final, source, decided) is False  # a fresh reader finds the digest in the file
    # back to the campaign's labels: written again
    assert rd.write_labels(st.final, st.source, st.decided_round) is True


def test_a_labels_file_without_its_digest_or_replaced_is_written_again(run):
    st = _state(run)
    t = pq.read_table(run / "labels.parquet")
    pq.write_table(t.replace_schema_metadata(None), run / "labels.parquet")  # as an older crowdprop wrote it
    rd = RunDir(run)
    assert rd.write_labels(st.final, st.source, st.decided_round) is True
    assert rd.write_labels(st.final, st.source, st.decided_round) is False
    (run / "labels.parquet").write_bytes(b"not parquet")  # damaged behind this reader's back
    assert rd.write_labels(st.final, st.source, st.decided_round) is True
    assert len(pd.read_parquet(run / "labels.parquet")) == len(st.final)


def test_labels_table_refuses_codes_it_has_no_name_for():
    masks = pd.DataFrame({"mask_id": [1, 2], "image_id": [1, 1], "category_id": [3, 3]})
    with pytest.raises(ValueError, match="codes outside"):
        tbl.labels_table(masks, np.array([1, 2]), np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="labels of 1/2/2 masks for 2 masks"):
        tbl.labels_table(masks, np.array([1]), np.array([0, 0]), np.array([1, 1]))


def _arrays(f: Forest) -> dict:
    return {k: getattr(f, k) for k in ("order", "category", "parent", "left", "right", "start", "end", "height",
                                        "depth")}


def test_the_forest_read_into_numpy_is_the_forest_read_through_pandas(run):
    want = Forest.from_tables(pd.read_parquet(run / "trees" / "nodes.parquet"),
                              pd.read_parquet(run / "trees" / "order.parquet"))
    got = RunDir(run).forest
    for k, a in _arrays(want).items():
        b = getattr(got, k)
        assert b.dtype == a.dtype and np.array_equal(a, b), k
    got.check()
    # rows written in another order (by another tool) are put back in node and position order
    nodes = pq.read_table(run / "trees" / "nodes.parquet")
    order = pq.read_table(run / "trees" / "order.parquet")
    rng = np.random.default_rng(0)
    pq.write_table(nodes.take(rng.permutation(nodes.num_rows)), run / "trees" / "nodes.parquet")
    pq.write_table(order.take(rng.permutation(order.num_rows)), run / "trees" / "order.parquet")
    shuffled = RunDir(run).forest
    for k, a in _arrays(want).items():
        assert np.array_equal(a, getattr(shuffled, k)), k


def test_a_damaged_forest_file_is_one_line(run):
    nodes = pq.read_table(run / "trees" / "nodes.parquet")
    i = nodes.schema.get_field_index("parent")
    text = nodes.set_column(i, "parent", pa.array([str(v) for v in nodes.column("parent").to_pylist()]))
    pq.write_table(text, run / "trees" / "nodes.parquet")
    with pytest.raises(StateError, match=r"nodes.parquet: field 'parent': expected integer values, found string"):
        _ = RunDir(run).forest
    pq.write_table(nodes.drop_columns(["depth"]), run / "trees" / "nodes.parquet")
    with pytest.raises(StateError, match=r"nodes.parquet: field 'depth': column missing"):
        _ = RunDir(run).forest
    (run / "trees" / "order.parquet").write_bytes(b"PAR1 cut short")
    pq.write_table(nodes, run / "trees" / "nodes.parquet")
    with pytest.raises(StateError, match=r"order.parquet: unreadable Parquet file"):
        _ = RunDir(run).forest


def test_a_committed_round_is_read_back_from_memory_as_from_its_files(run, monkeypatch):
    """The round a campaign commits is not read again when its state is reloaded: the frames
    kept at the commit are what reading the files gives."""
    from crowdprop.campaign import store
    from crowdprop.campaign.loop import Campaign
    from crowdprop.crowd.factory import simulated_backend

    for p in (run / "state").iterdir():
        shutil.rmtree(p)
    rd = RunDir(run)
    calls = []
    real = store.read_table
    monkeypatch.setattr(store, "read_table", lambda p, name=None, columns=None: calls.append(p) or
                        real(p, name, columns))
    Campaign(rd, simulated_backend(rd), progress=False).run(max_rounds=2)
    assert rd.rounds() == [1, 2]
    assert not [p for p in calls if "state" in str(p)]  # no committed round file was read
    fresh = RunDir(run)
    for name in tbl.ROUND_TABLES:
        pd.testing.assert_frame_equal(rd.read_rounds(name), fresh.read_rounds(name), obj=name)


def test_labels_written_in_the_background_are_on_disk_when_the_lock_is_released(run, monkeypatch):
    from crowdprop.campaign import store

    st = _state(run)
    final = st.final.copy()
    final[0] = 0 if final[0] == 1 else 1
    rd = RunDir(run)
    with rd.lock():
        assert rd.write_labels(final, st.source, st.decided_round, wait=False) is True
        final[1] = 5  # the caller's arrays may change: what was asked for is written
    assert "_labels_writer" not in rd.__dict__
    got = pd.read_parquet(run / "labels.parquet")
    assert got.loc[0, "label"] == ("rejected" if final[0] == 0 else "accepted")
    assert got.loc[1, "label"] == {-1: "open", 0: "rejected", 1: "accepted"}[int(st.final[1])]
    # what writing raised comes back from the next call, wait_labels or the end of the lock
    real = store._io.atomic_path

    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store._io, "atomic_path", full)
    assert rd.write_labels(st.final, st.source, st.decided_round, wait=False) is True
    with pytest.raises(OSError, match="No space left"):
        rd.wait_labels()
    with pytest.raises(OSError, match="No space left"):
        with rd.lock():
            rd.write_labels(st.final, st.source, st.decided_round, wait=False)
    monkeypatch.setattr(store._io, "atomic_path", real)
    assert rd.write_labels(st.final, st.source, st.decided_round) is True
    assert pd.read_parquet(run / "labels.parquet")["label"].tolist() == [
        {-1: "open", 0: "rejected", 1: "accepted"}[int(v)] for v in st.final]


def test_a_simulated_crowds_journal_is_not_fsynced(run, monkeypatch):
    import json
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    rd = RunDir(run)
    rd.journal_append(9, "published", {"token": "t"})
    assert calls == [] and rd.journal_lines(9, "published") == [{"token": "t"}]
    camp = json.loads((run / "campaign.json").read_text())
    camp["crowd"] = {"kind": "mturk"}
    (run / "campaign.json").write_text(json.dumps(camp))
    RunDir(run).journal_append(9, "published", {"token": "u"})
    assert len(calls) == 1 and RunDir(run).journal_lines(9, "published") == [{"token": "t"}, {"token": "u"}]


def test_labels_written_in_the_background_are_on_disk_when_a_nested_lock_ends(run):
    st = _state(run)
    final = st.final.copy()
    final[0] = 0 if final[0] == 1 else 1
    outer, inner = RunDir(run), RunDir(run)
    with outer.lock():
        with inner.lock():  # the same directory through another object: re-entrant
            inner.write_labels(final, st.source, st.decided_round, wait=False)
        assert "_labels_writer" not in inner.__dict__
        assert pd.read_parquet(run / "labels.parquet").loc[0, "label"] == ("rejected" if final[0] == 0 else "accepted")
