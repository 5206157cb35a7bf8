"""Golds of a video campaign without ground truth: ``crowdprop video gold import RUN_DIR FILE`` (CSV or
JSON: frame, region or pixel, class) and ``--worker ID`` (a trusted person's answers); bad records are one
line naming the file, the record and the field (exit 2); a campaign with imported golds publishes HITs
with golds and a qualification test on them (real boto3 against crowdprop's local MTurk endpoint)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from crowdprop.cli import main  # noqa: E402
from crowdprop.video.crowd import MIXED  # noqa: E402
from crowdprop.video.golds import pool  # noqa: E402
from crowdprop.video.run import VideoRun, init_video, run  # noqa: E402
from crowdprop.video.units import unit_truth  # noqa: E402

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("no_aws_credentials")]


@pytest.fixture
def gold_config(tmp_path):
    p = tmp_path / "golds.toml"
    p.write_text("[video]\nrounds = 1\nclicks_per_round = 12\nfinetune_steps = 2\ncheckpoint_every = 0\n"
                 "superpixel_px = 40\n[crowd]\nquestions_per_hit = 4\ngolds_per_hit = 1\nreward_usd = 0.05\n"
                 "poll_interval_s = 0.0\n[quality]\nqualification_size = 4\nqualification_pass = 0.75\n"
                 "[campaign]\nbudget_usd = 5.0\n")
    return p


@pytest.fixture
def no_gt_run(tmp_path, clip_dir, checkpoint, gold_config):
    """A real campaign's run directory: MTurk, no ground truth, so no golds."""
    a = tmp_path / "a"
    init_video(a, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint, config=gold_config,
               crowd={"kind": "mturk", "target": "sandbox"})
    vr = VideoRun(a).require()
    assert not (a / "golds.parquet").exists() and not len(pool(vr))
    return vr


def _truth(vr, tiny_clip):
    regions = np.asarray(vr.units()["regions"])
    return regions, unit_truth(regions, tiny_clip.labels, int(regions.max()) + 1, len(vr.classes),
                               mixed_below=vr.config.video.mixed_below)[0]


def test_import_from_csv_and_json(no_gt_run, tiny_clip, tmp_path, capsys):
    vr = no_gt_run
    regions, truth = _truth(vr, tiny_clip)
    names = vr.campaign["frame_names"]
    r1 = int(regions[1, 0, 0])  # by region id, frame by number, class by name
    r2 = int(regions[2, 10, 20])  # by pixel, frame by file name, class by id
    r3 = int(regions[4, 31, 31])  # "mixed"
    csv = tmp_path / "g.csv"
    csv.write_text("frame,region,x,y,class\n"
                   f"1,{r1},,,{vr.classes[2]}\n"
                   f"{names[2]},,20,10,1\n"
                   f"4,,31,31,mixed\n"
                   f"1,{r1},,,{vr.classes[2]}\n")  # a repeat is one gold
    assert main(["video", "gold", "import", str(vr.path), str(csv)]) == 0
    assert "3 golds imported; pool has 3 (1 mixed)" in capsys.readouterr().out
    g = pool(vr)
    assert g[["region", "frame", "truth"]].values.tolist() == sorted([[r1, 1, 2], [r2, 2, 1], [r3, 4, MIXED]])
    assert (g["used"] == 0).all()
    # JSON: a region's answer is replaced, others join the pool
    js = tmp_path / "g.json"
    r4 = int(regions[5, 5, 5])
    js.write_text(json.dumps([{"frame": 1, "region": r1, "class": 0},
                              {"frame": 5, "x": 5, "y": 5, "class": vr.classes[int(max(truth[r4], 0))]}]))
    assert main(["video", "gold", "import", str(vr.path), str(js)]) == 0
    g = pool(vr).set_index("region")
    assert len(g) == 4 and g.loc[r1, "truth"] == 0 and g.loc[r4, "frame"] == 5 and g.loc[r3, "truth"] == MIXED


@pytest.mark.parametrize("content, where, field", [
    ("frame,region,class\n0,{r0},background\n9,{r0},background\n", "line 3", "frame"),  # no frame 9
    ("frame,region,class\n0,{r0},background\n1,{r0},background\n", "line 3", "region"),  # not a region of frame 1
    ("frame,x,y,class\n0,32,0,background\n", "line 2", "x"),  # outside the 32 px frame
    ("frame,x,y,class\n0,3,,background\n", "line 2", "region"),  # neither region nor a whole pixel
    ("frame,region,class\n0,{r0},sky\n", "line 2", "class"),  # no such class
    ("frame,region,class\n0,{r0},7\n", "line 2", "class"),  # no such class id
    ("frame,region,class\nzero,{r0},0\n", "line 2", "frame"),  # neither a number nor a frame's name
    ("frame,region,class\n0,{r0},1\n0,{r0},2\n", "line 3", "class"),  # contradicts line 2
    ("frame,region\n0,{r0}\n", "line 1", "header"),
    ('[{{"frame": 0, "region": {r0}, "class": 1}}, {{"frame": 0, "region": "{r0}x", "class": 1}}]',
     "record 1", "region"),
    ('[{{"frame": 0, "region": {r0}}}]', "record 0", "class"),
    ('[{{"frame": true, "region": {r0}, "class": 1}}]', "record 0", "frame"),
])
def test_bad_records_are_one_line_and_import_nothing(no_gt_run, tmp_path, capsys, content, where, field):
    vr = no_gt_run
    r0 = int(np.asarray(vr.units()["regions"])[0, 0, 0])
    p = tmp_path / ("bad.json" if content.startswith("[") else "bad.csv")
    p.write_text(content.format(r0=r0))
    assert main(["video", "gold", "import", str(vr.path), str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count(str(p)) == 1
    assert f": {where}: field '{field}': " in err
    assert not (vr.path / "golds.parquet").exists()


def test_file_or_worker_and_empty_files(no_gt_run, tmp_path, capsys):
    vr = no_gt_run
    assert main(["video", "gold", "import", str(vr.path)]) == 2
    assert "FILE" in capsys.readouterr().err
    empty = tmp_path / "e.csv"
    empty.write_text("frame,region,class\n")
    assert main(["video", "gold", "import", str(vr.path), str(empty)]) == 2
    assert "no golds in the file" in capsys.readouterr().err
    assert main(["video", "gold", "import", str(vr.path), "--worker", "ANOBODY"]) == 2
    assert "'ANOBODY' answered no label question" in capsys.readouterr().err


def test_golds_from_a_trusted_workers_answers(tmp_path, clip_dir, checkpoint, tiny_config, capsys):
    a = tmp_path / "a"
    init_video(a, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint, gt=clip_dir / "gt",
               config=tiny_config)
    run(a, rounds=1)
    vr = VideoRun(a).require()
    before = pool(vr)
    ans = vr.table("answers")
    lab = ans.loc[ans["kind"] == "label"]
    who = lab["worker"].value_counts().index[0]
    mine = lab.loc[lab["worker"] == who].drop_duplicates("region", keep="last")
    assert main(["video", "gold", "import", str(a), "--worker", who]) == 0
    assert f"{len(mine)} golds imported" in capsys.readouterr().out
    g = pool(vr).set_index("region")
    assert set(mine["region"]) <= set(g.index) and len(g) == len(set(before["region"]) | set(mine["region"]))
    np.testing.assert_array_equal(g.loc[mine["region"], "truth"].to_numpy(), mine["answer"].to_numpy())
    np.testing.assert_array_equal(g.loc[mine["region"], "frame"].to_numpy(), mine["frame"].to_numpy())


def test_a_campaign_with_imported_golds_publishes_hits_with_golds(tmp_path, clip_dir, checkpoint, tiny_clip,
                                                                   gold_config):
    """No ground truth: golds imported from a file; on a local endpoint a person takes the qualification
    test on them and does every HIT (answers from the clip's truth); each HIT carries a gold of the file."""
    from crowdprop.mturk_local import LocalMTurk, ManualClock, serve
    from crowdprop.replay.workers import WorkerPool
    from crowdprop.config import SimulationSection
    from crowdprop.video import hits as vh
    from crowdprop.video.localcrowd import page_regions

    from .test_mturk import client_for

    a = tmp_path / "a"
    clock = ManualClock()
    local = LocalMTurk({}, WorkerPool.build(SimulationSection(), 0), simulate=False, clock=clock,
                       images_dir=a / "hit_images")
    handle = serve(local)
    try:
        init_video(a, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
                   config=gold_config, crowd={"kind": "mturk", "target": "local", "endpoint_url": handle.url})
        vr = VideoRun(a).require()
        assert vh.qualification(vr)[0] is None  # no golds yet: no test
        regions, truth = _truth(vr, tiny_clip)
        rng = np.random.default_rng(0)
        picked = rng.choice(int(regions.max()) + 1, 10, replace=False)
        frame_of = {int(r): int(np.flatnonzero((regions == r).any((1, 2)))[0]) for r in picked}
        rows = [{"frame": frame_of[int(r)], "region": int(r),
                 "class": "mixed" if truth[r] == MIXED else vr.classes[truth[r]]} for r in picked]
        gf = tmp_path / "golds.json"
        gf.write_text(json.dumps(rows))
        assert main(["video", "gold", "import", str(a), str(gf)]) == 0
        test, test_golds = vh.qualification(vr)
        assert len(test) == 4 and set(test_golds["region"]) <= set(picked.tolist())
        took = []

        def person(_seconds):
            if not took:
                (t,) = local.tests()
                items = local.test_page(t["QualificationTypeId"])[3]
                took.append(local.take_test(t["QualificationTypeId"], "ATRUSTED", {
                    it.identifier: vh.qualification_selection(truth[int(it.identifier.split("-")[1])])
                    for it in items}))
            for h in local.call("ListHITs", {"MaxResults": 100})["HITs"]:
                if h["HITStatus"] != "Assignable" or not int(h["NumberOfAssignmentsAvailable"]):
                    continue
                aid = local.accept(h["HITId"], "ATRUSTED")
                clock.advance(20)
                fields = [("assignmentId", aid)] + [(q, vh.qualification_selection(truth[reg]))
                                                    for q, reg in page_regions(local.hit_page(h["HITId"]))]
                local.external_submit(fields, worker_id="ATRUSTED", hit_id=h["HITId"])

        crowd = vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=person, clock=clock,
                           retry_wait_s=0.01)
        run(a, crowd=crowd)
        crowd.close()
        assert took == [100]
        vr = VideoRun(a).require()
        hits = pd.read_parquet(vr.round_dir(1) / "hits.parquet")
        per = hits.groupby("token").agg(golds=("kind", lambda k: int((k == "gold").sum())))
        assert len(per) == 4 and (per["golds"] == 1).all()
        g = hits.loc[hits["kind"] == "gold"]
        assert set(g["region"]) <= set(picked.tolist())
        np.testing.assert_array_equal(g["truth"].to_numpy(), truth[g["region"].to_numpy()])
        asg = vr.table("assignments")
        assert len(asg) == 4 and asg["approved"].all() and (asg["golds"] == 1).all()
        assert (asg["golds_correct"] == 1).all() and set(asg["worker"]) == {"ATRUSTED"}
        # the test MTurk holds stays the campaign's test when more golds come
        more = tmp_path / "more.csv"
        rest = sorted(set(range(int(regions.max()) + 1)) - set(picked.tolist()))[:30]
        more.write_text("frame,region,class\n" + "".join(
            f"{int(np.flatnonzero((regions == r).any((1, 2)))[0])},{r},{'mixed' if truth[r] == MIXED else truth[r]}\n"
            for r in rest))
        assert main(["video", "gold", "import", str(a), str(more)]) == 0 and len(pool(vr)) == 40
        pd.testing.assert_frame_equal(vh.qualification(vr)[1], test_golds)
    finally:
        handle.stop()
