"""crowdprop video: init, run, status, report, export on a tiny clip; kill-and-resume; bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdprop.cli import main  # noqa: E402
from crowdprop.video.run import VideoRun, init_video, miou, run  # noqa: E402

pytestmark = pytest.mark.detect


def _init(tmp_path, name, clip_dir, checkpoint, config, **kw):
    return init_video(tmp_path / name, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
                      gt=clip_dir / "gt", config=config, **kw)


class Killed(Exception):
    pass


def test_commands_and_kill_and_resume_mid_finetuning(tmp_path, clip_dir, checkpoint, tiny_config, tiny_clip, capsys):
    a = tmp_path / "a"
    assert main(["video", "init", str(a), "--frames", str(clip_dir / "frames"), "--labels",
                 str(clip_dir / "labels.json"), "--gt", str(clip_dir / "gt"), "--model", str(checkpoint),
                 "--config", str(tiny_config)]) == 0
    assert main(["video", "run", str(a)]) == 0
    capsys.readouterr()
    assert main(["video", "report", str(a), "--json", "--plot", str(tmp_path / "curve.png")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((a / "report.json").read_text())
    rep = json.loads((a / "report.json").read_text())
    vr = VideoRun(a).require()
    final = vr.pred()
    t = rep["total"]
    assert t["rounds"] == 2 and t["miou"] == pytest.approx(miou(final, tiny_clip.labels, 4))
    answers = vr.table("answers")
    lab = answers.loc[(answers["kind"] == "label") & answers["approved"]]
    assert t["clicks"] == len(lab) > 0
    assert t["clicks_share"] == pytest.approx(len(lab) / t["manual_clicks"])
    # human labels override the network on their regions (accurate workers: they are the truth's answers)
    regions = vr.units()["regions"]
    for row in lab.loc[lab["answer"] >= 0].itertuples():
        assert (final[regions == row.region] == row.answer).all()
    assert (tmp_path / "curve.png").stat().st_size > 1000
    # money: integer cents, what the approved assignments were paid
    asg = vr.table("assignments")
    assert t["cents"] == int(asg["reward_cents"].sum() + asg["fee_cents"].sum())

    assert main(["video", "export", str(a), "-o", str(tmp_path / "out")]) == 0
    from PIL import Image
    from pycocotools import mask as mu

    png = np.asarray(Image.open(sorted((tmp_path / "out" / "labels").iterdir())[2]))
    assert np.array_equal(png, final[2])
    coco = json.loads((tmp_path / "out" / "semantic.json").read_text())
    ann = [x for x in coco["annotations"] if x["image_id"] == 3]
    rebuilt = np.zeros_like(final[2])
    for x in ann:
        rebuilt[mu.decode(x["segmentation"]).astype(bool)] = x["category_id"]
    assert np.array_equal(rebuilt, final[2]) and [c["name"] for c in coco["categories"]][3] == "triangle"
    assert main(["video", "status", str(a), "--json"]) == 0
    st = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert st["round"] == 2 and st["clicks"] == t["clicks"] and st["in_progress"] == []
    # crowdprop status / report / export on a video run directory do what crowdprop video's do
    assert main(["status", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == st
    assert main(["report", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == t
    assert main(["export", str(a), "-o", str(tmp_path / "out2")]) == 0
    capsys.readouterr()
    assert np.array_equal(np.asarray(Image.open(sorted((tmp_path / "out2" / "labels").iterdir())[2])), final[2])
    for argv in (["report", str(a), "--html"], ["export", str(a), "--status", "open"],
                 ["status", str(a), "--watch", "5"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not for video run directories" in err[0], argv

    # the same campaign killed in round 2 after the fine-tuning checkpoint at step 4, then run again
    b = _init(tmp_path, "b", clip_dir, checkpoint, tiny_config).path
    seen = []

    def kill(step, state):
        seen.append(step)
        if len(seen) == 2 + 2:  # round 1 wrote checkpoints at 2 and 4; round 2 dies after its step 4
            raise Killed

    with pytest.raises(Killed):
        run(b, on_checkpoint=kill)
    jr = VideoRun(b).require()
    assert jr.rounds() == [0, 1] and (b / "journal" / "round-00002" / "ft.pt").exists()
    resumed = []
    run(b, on_checkpoint=lambda s, st: resumed.append(s))
    assert resumed == []  # fine-tuning went on from step 4 of 6: no checkpoint left to write
    jr = VideoRun(b).require()
    assert jr.rounds() == [0, 1, 2] and not (b / "journal" / "round-00002").exists()
    assert np.array_equal(jr.pred(), final)
    sa = torch.load(a / "state" / "round-00002" / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "state" / "round-00002" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    pa, pb = vr.table("answers"), jr.table("answers")
    assert pa.equals(pb)


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_are_one_line_exit_2(tmp_path, clip_dir, checkpoint, capsys):
    labels = str(clip_dir / "labels.json")
    base = ["--model", str(checkpoint), "--labels", labels]
    # an unreadable video
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 100)
    assert main(["video", "init", str(tmp_path / "r1"), "--frames", str(bad)] + base) == 2
    line = _err(capsys)
    assert str(bad) in line and "--frames" in line and "unreadable video" in line
    # a labels file missing a class of the model
    lab = json.loads((clip_dir / "labels.json").read_text())
    lab["classes"] = lab["classes"][:3]
    short = tmp_path / "labels.json"
    short.write_text(json.dumps(lab))
    assert main(["video", "init", str(tmp_path / "r2"), "--frames", str(clip_dir / "frames"), "--labels", str(short),
                 "--model", str(checkpoint)]) == 2
    line = _err(capsys)
    assert str(short) in line and "field 'classes'" in line and "'triangle'" in line
    # ... and ground truth with a class the labels file lacks
    from PIL import Image

    gt7 = tmp_path / "gt7"
    shutil.copytree(clip_dir / "gt", gt7)
    g7 = sorted(gt7.iterdir())[4]
    arr = np.asarray(Image.open(g7)).copy()
    arr[0, 0] = 7
    Image.fromarray(arr).save(g7)
    assert main(["video", "init", str(tmp_path / "r2b"), "--frames", str(clip_dir / "frames"), "--gt", str(gt7)]
                + base) == 2
    line = _err(capsys)
    assert str(g7) in line and "frame 4" in line and "field 'class'" in line and "pixel value 7" in line
    # frames of different sizes
    frames = tmp_path / "frames"
    shutil.copytree(clip_dir / "frames", frames)
    odd = sorted(frames.iterdir())[3]
    Image.open(odd).resize((40, 32)).save(odd)
    assert main(["video", "init", str(tmp_path / "r3"), "--frames", str(frames)] + base) == 2
    line = _err(capsys)
    assert str(odd) in line and "frame 3" in line and "field 'size'" in line and "40x32" in line
    # a ground-truth map of another size
    gt2 = tmp_path / "gt2"
    shutil.copytree(clip_dir / "gt", gt2)
    g = sorted(gt2.iterdir())[1]
    Image.open(g).resize((16, 16)).save(g)
    assert main(["video", "init", str(tmp_path / "r4"), "--frames", str(clip_dir / "frames"), "--gt", str(gt2)]
                + base) == 2
    line = _err(capsys)
    assert str(g) in line and "field 'size'" in line
    # a configuration value out of range
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text('[video]\ngranularity = "pixel"\n')
    assert main(["video", "init", str(tmp_path / "r5"), "--frames", str(clip_dir / "frames"), "--config",
                 str(bad_cfg)] + base) == 2
    line = _err(capsys)
    assert str(bad_cfg) in line and "[video]" in line and "field 'granularity'" in line
    for r in ("r1", "r2", "r2b", "r3", "r4", "r5"):  # nothing half-written
        assert not (tmp_path / r).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # about 20 s: a fresh process imports torch, OpenCV and scikit-image
def test_sigkill_mid_finetuning_then_run_again_gives_the_same_result(tmp_path, clip_dir, checkpoint):
    """A real kill: ``crowdprop video run`` in its own process, SIGKILLed once its first fine-tuning
    checkpoint is on disk, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "kill.toml"
    cfg.write_text("[video]\nrounds = 1\nclicks_per_round = 12\nfinetune_steps = 30\ncheckpoint_every = 2\n"
                   "superpixel_px = 40\n[crowd]\nquestions_per_hit = 8\ngolds_per_hit = 1\n"
                   "[simulation]\nworkers = 4\naccuracy = 1.0\naccuracy_spread = 0.0\n")
    a = _init(tmp_path, "a", clip_dir, checkpoint, cfg).path
    b = tmp_path / "b"
    shutil.copytree(a, b)
    run(a)
    ck = b / "journal" / "round-00001" / "ft.pt"
    proc = subprocess.Popen([sys.executable, "-m", "crowdprop", "video", "run", str(b)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not ck.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        assert ck.exists() and proc.poll() is None, "the run ended before its first checkpoint could be seen"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert VideoRun(b).require().rounds() == [0]  # round 1 not committed
    run(b)
    jb = VideoRun(b).require()
    assert jb.rounds() == [0, 1]
    assert np.array_equal(jb.pred(), VideoRun(a).require().pred())
    sa = torch.load(a / "state" / "round-00001" / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "state" / "round-00001" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
