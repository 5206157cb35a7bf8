"""Video mode at scale: frames streamed into chunk folders, label maps kept compressed, init's
per-chunk work on an engine. Streamed (small chunks) and whole-clip (one chunk) runs, and the
local and Ray engines, give the same run directory, byte for byte in every array."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from crowdprop.video.rundir import ChunkedArray, ChunkWriter, VideoRun  # noqa: E402
from crowdprop.video.run import init_video, run  # noqa: E402

pytestmark = pytest.mark.detect

FRAMES = 20  # chunks of 8: 8 + 8 + 4 frames, 19 flow pairs (the last chunk's pairs end at the clip's end)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    from crowdprop.video.synth import make_clip, write_clip

    clip = make_clip(np.random.default_rng([11, 7]), frames=FRAMES, size=32)
    return clip, write_clip(clip, tmp_path_factory.mktemp("long"))


def _config(tmp_path, chunk: int, **video) -> str:
    p = tmp_path / f"video-{chunk}-{len(video)}.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in video.items())
    p.write_text(f"[video]\nrounds = 1\nclicks_per_round = 12\nfinetune_steps = 4\ncheckpoint_every = 2\n"
                 f"superpixel_px = 40\nchunk_frames = {chunk}\n{extra}"
                 "[crowd]\nquestions_per_hit = 8\ngolds_per_hit = 1\nreward_usd = 0.05\n"
                 "[simulation]\nworkers = 4\naccuracy = 1.0\naccuracy_spread = 0.0\n")
    return str(p)


def _init(tmp_path, name, clip_dir, checkpoint, config, **kw):
    return init_video(tmp_path / name, frames=clip_dir / "frames", labels=clip_dir / "labels.json",
                      model=checkpoint, gt=clip_dir / "gt", config=config, **kw)


def _same_run(a: VideoRun, b: VideoRun) -> None:
    """Every stored array, table and metric of two run directories is the same."""
    assert np.array_equal(a.frames(), b.frames()) and np.array_equal(a.gt(), b.gt())
    ua, ub = a.units(), b.units()
    assert ua.keys() == ub.keys() and all(np.array_equal(ua[k], ub[k]) for k in ua)
    fa, fb = a.flows(), b.flows()
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert pd.read_parquet(a.path / "golds.parquet").equals(pd.read_parquet(b.path / "golds.parquet"))
    assert a.campaign["manual"] == b.campaign["manual"]
    assert a.rounds() == b.rounds()
    for r in a.rounds():
        assert np.array_equal(a.pred(r), b.pred(r))
        assert np.array_equal(np.asarray(a.pred_store(r, "model_pred")), np.asarray(b.pred_store(r, "model_pred")))
        ma, mb = dict(a.metrics()[r]), dict(b.metrics()[r])
        ma.pop("seconds"), mb.pop("seconds")
        assert ma == mb
    assert a.table("answers").equals(b.table("answers"))


def test_chunked_array_reads_like_the_array(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.integers(0, 255, size=(21, 3, 4), dtype=np.uint8)
    w = ChunkWriter(tmp_path / "c", 8)
    for s in (0, 5, 6, 19):  # appends that do not line up with chunks
        w.append(a=full[s:{0: 5, 5: 6, 6: 19, 19: 21}[s]], b=full[s:{0: 5, 5: 6, 6: 19, 19: 21}[s]].astype(np.int32))
    w.close()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["00000.npz", "00001.npz", "00002.npz", "meta.json"]
    a = ChunkedArray(tmp_path / "c", "a")
    b = ChunkedArray(tmp_path / "c", "b")
    assert a.shape == full.shape and len(a) == 21 and a.dtype == np.uint8 and b.dtype == np.int32
    assert np.array_equal(a[7], full[7]) and np.array_equal(a[-1], full[-1])
    for sl in (slice(0, 21), slice(3, 17), slice(8, 16), slice(15, 9), slice(0, 21, 4)):
        assert np.array_equal(a[sl], full[sl]), sl
    ix = np.array([20, 0, 9, 9, 15])
    assert np.array_equal(a[ix], full[ix]) and np.array_equal(b[ix], full[ix].astype(np.int32))
    assert np.array_equal(np.asarray(a), full)
    assert [(s.start, s.stop) for s in a.chunk_slices()] == [(0, 8), (8, 16), (16, 21)]
    with pytest.raises(IndexError):
        a[21]


def test_frames_are_read_lazily_from_a_video_file(tmp_path, long_clip):
    import cv2

    from crowdprop.video.inputs import FrameSource, read_frames

    clip, _ = long_clip
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for f in clip.frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    whole, names = read_frames(path)
    src = FrameSource(path)
    blocks = list(src.chunks(8))
    assert [len(b) for b in blocks] == [8, 8, 4] and src.count is None and src.names == names
    assert np.array_equal(np.concatenate(blocks), whole) and whole.shape == (FRAMES, 32, 32, 3)


def test_streamed_and_whole_clip_runs_are_the_same(tmp_path, long_clip, checkpoint):
    clip, clip_dir = long_clip
    a = _init(tmp_path, "streamed", clip_dir, checkpoint, _config(tmp_path, 8))
    b = _init(tmp_path, "whole", clip_dir, checkpoint, _config(tmp_path, 64))
    # the streamed run really is in chunks: 3 chunks of frames, unit maps, flows and label maps
    assert len(list((a.path / "frames").glob("*.npz"))) == 3 and len(list((b.path / "frames").glob("*.npz"))) == 1
    assert len(list((a.path / "flows").glob("*.npz"))) == 3
    assert len(list((a.round_dir(0) / "pred").glob("*.npz"))) == 3
    assert ChunkedArray(a.path / "flows", "fwd").shape == (FRAMES - 1, 32, 32, 2)
    assert np.array_equal(a.frames(), clip.frames) and np.array_equal(a.gt(), clip.labels)
    run(a.path)
    run(b.path)
    a, b = VideoRun(a.path).require(), VideoRun(b.path).require()
    assert a.rounds() == [0, 1] and a.metrics()[1]["clicks"] > 0
    _same_run(a, b)
    # unit ids are global and frame by frame across chunk boundaries
    u = a.units()
    assert u["units"][8].min() == u["units"][7].max() + 1
    sa = torch.load(a.round_dir(1) / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b.round_dir(1) / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_processes_and_ray_give_the_same_run_directory_and_rounds(tmp_path, long_clip, checkpoint):
    pytest.importorskip("ray")
    _, clip_dir = long_clip
    cfg = _config(tmp_path, 8)
    a = _init(tmp_path, "local", clip_dir, checkpoint, cfg)
    b = _init(tmp_path, "procs", clip_dir, checkpoint, cfg, engine="local", workers=2)
    c = _init(tmp_path, "ray", clip_dir, checkpoint, cfg, engine="ray", workers=2)
    # a round's inference (selection's and the final labels) on the same engines
    run(a.path)
    run(b.path, engine="local", workers=2)
    run(c.path, engine="ray", workers=2)
    a, b, c = (VideoRun(x.path).require() for x in (a, b, c))
    assert a.rounds() == [0, 1] and a.metrics()[1]["clicks"] > 0
    _same_run(a, b)
    _same_run(a, c)


def test_a_rounds_inference_goes_to_the_engine(tmp_path, long_clip, checkpoint):
    """A round given a worker engine sends selection's inference and the final labels to it, a
    chunk per task (here an engine that records its tasks and runs them in process)."""
    from crowdprop.engine import Engine
    from crowdprop.video import run as vrun

    tasks: list[tuple] = []

    class Recording(Engine):
        def map(self, fn, items):
            for item in items:
                tasks.append((fn.__name__, item[2], item[3].get("what")))
                yield fn(*item)

    _, clip_dir = long_clip
    cfg = _config(tmp_path, 8)
    a = _init(tmp_path, "a", clip_dir, checkpoint, cfg)
    b = _init(tmp_path, "b", clip_dir, checkpoint, cfg)
    run(a.path)
    vb = VideoRun(b.path).require()
    with vb.lock():
        vrun.run_round(vb, 1, engine=Recording())
    assert tasks == [("round_task", i, "stats") for i in range(3)] + [("round_task", i, "labels") for i in range(3)]
    _same_run(VideoRun(a.path).require(), VideoRun(b.path).require())


def test_engine_options_on_the_command_line(tmp_path, long_clip, checkpoint, capsys):
    from crowdprop.cli import main

    _, clip_dir = long_clip
    base = ["video", "init", "--frames", str(clip_dir / "frames"), "--labels", str(clip_dir / "labels.json"),
            "--gt", str(clip_dir / "gt"), "--model", str(checkpoint), "--config", _config(tmp_path, 8)]
    assert main(base[:2] + [str(tmp_path / "w2")] + base[2:] + ["--engine", "local", "--workers", "2"]) == 0
    assert VideoRun(tmp_path / "w2").require().campaign["frames"] == FRAMES
    assert main(["video", "run", str(tmp_path / "w2"), "--engine", "local", "--workers", "2"]) == 0
    assert VideoRun(tmp_path / "w2").require().rounds() == [0, 1]
    capsys.readouterr()
    assert main(base[:2] + [str(tmp_path / "w0")] + base[2:] + ["--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0] and not (tmp_path / "w0").exists()


def test_bad_chunk_size_is_one_line(tmp_path, long_clip, checkpoint, capsys):
    from crowdprop.cli import main

    _, clip_dir = long_clip
    p = tmp_path / "bad.toml"
    p.write_text("[video]\nchunk_frames = 12\n")
    assert main(["video", "init", str(tmp_path / "x"), "--frames", str(clip_dir / "frames"), "--labels",
                 str(clip_dir / "labels.json"), "--gt", str(clip_dir / "gt"), "--model", str(checkpoint),
                 "--config", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chunk_frames" in err[0] and "multiple of 8" in err[0]


def _to_first_version(vr: VideoRun) -> None:
    """Rewrite a run directory (round 0 only) in the first version's layout: whole-array .npz files."""
    import shutil

    from crowdprop.video.rundir import save_npz

    p = vr.path
    u = vr.units()
    fl = {k: np.asarray(v) for k, v in vr.flow_store().items()}
    save_npz(p / "frames.npz", frames=vr.frames())
    save_npz(p / "gt.npz", gt=vr.gt())
    save_npz(p / "units.npz", **u)
    save_npz(p / "flows.npz", **fl)
    for name in ("pred", "model_pred"):
        save_npz(vr.round_dir(0) / f"{name}.npz", labels=np.asarray(vr.pred_store(0, name)))
        shutil.rmtree(vr.round_dir(0) / name)
    for name in ("frames", "gt", "units", "flows"):
        shutil.rmtree(p / name)
    camp = dict(vr.campaign)
    camp.pop("manual")
    vr.write_campaign(camp)


def test_a_first_version_run_directory_is_continued_the_same(tmp_path, long_clip, checkpoint):
    _, clip_dir = long_clip
    cfg = _config(tmp_path, 8)
    a = _init(tmp_path, "new", clip_dir, checkpoint, cfg)
    b = _init(tmp_path, "first", clip_dir, checkpoint, cfg)
    _to_first_version(VideoRun(b.path).require())
    assert (b.path / "frames.npz").exists() and not (b.path / "frames").exists()
    run(a.path)
    run(b.path)
    a, b = VideoRun(a.path).require(), VideoRun(b.path).require()
    assert (b.round_dir(1) / "pred").is_dir() and (b.round_dir(0) / "pred.npz").exists()  # new rounds: chunks
    assert np.array_equal(a.pred(1), b.pred(1)) and np.array_equal(a.pred(0), b.pred(0))
    ma, mb = dict(a.metrics()[1]), dict(b.metrics()[1])
    ma.pop("seconds"), mb.pop("seconds")
    assert ma == mb and ma["miou_manual"] is not None
    assert a.table("answers").equals(b.table("answers"))
