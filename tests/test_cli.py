"""Bad input through the command line: one line naming file, record and field; exit 2;
no traceback; the run directory untouched."""
import json

import numpy as np
import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.cli import main
from crowdprop.masks import rle


def _mask(h=10, w=12):
    m = np.zeros((h, w), np.uint8)
    m[2:6, 3:8] = 1
    return rle.encode(m)


GT = {"images": [{"id": 1, "height": 10, "width": 12}, {"id": 2, "height": 10, "width": 12}],
      "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
      "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 0,
                       "segmentation": {"size": [10, 12], "counts": _mask()}}]}


def pred(i, **kw):
    r = {"id": i, "image_id": 1 + i % 2, "category_id": 1 + i % 2, "score": 0.5 + i / 100,
         "segmentation": {"size": [10, 12], "counts": _mask()}}
    r.update(kw)
    return r


def write(p, obj):
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def run_init(tmp_path, capsys, preds=None, gt=None, features=None, config=None):
    preds_p = write(tmp_path / "preds.json", preds if preds is not None else [pred(i) for i in range(6)])
    gt_p = write(tmp_path / "gt.json", gt if gt is not None else GT)
    run_dir = tmp_path / "run"
    args = ["init", str(run_dir), "--predictions", str(preds_p), "--gt", str(gt_p)]
    if features is not None:
        args += ["--features", str(features)]
    if config is not None:
        args += ["--config", str(write(tmp_path / "c.toml", config))]
    code = main(args)
    err = capsys.readouterr().err
    return code, err, run_dir


CASES = [
    ("malformed JSON", dict(preds="[{"), "preds.json: line 1 column 3", "malformed JSON"),
    ("unknown image", dict(preds=[pred(0, image_id=5)]), "record 0 (id=0): field 'image_id'", "not in the ground truth"),
    ("RLE size", dict(preds=[pred(0, segmentation={"size": [9, 12], "counts": _mask(9, 12)})]),
     "field 'segmentation.size'", "disagrees with image 1"),
    ("polygon 2 points", dict(preds=[pred(0, segmentation=[[1, 1, 4, 4]])]), "field 'segmentation[0]'", "needs >= 3"),
    ("duplicate ids", dict(preds=[pred(0), pred(0)]), "record 1 (id=0): field 'id'", "duplicate id"),
    ("empty class name", dict(gt=dict(GT, categories=[{"id": 1, "name": ""}, {"id": 2, "name": "dog"}])),
     "categories[0] (id=1): field 'name'", "empty class name"),
    ("score out of range", dict(preds=[pred(0, score=1.5)]), "field 'score'", "[0, 1]"),
    ("config unknown key", dict(config="[policy]\nacept = 0.9\n"), "c.toml: [policy]: field 'acept'", "unknown key"),
    ("config out of range", dict(config="[policy]\naccept = 0.1\nreject = 0.3\n"), "[policy]: field 'reject'",
     "below accept"),
    ("config wrong type", dict(config="[policy]\nk = 'fifteen'\n"), "[policy]: field 'k'", "expected int"),
    ("config malformed", dict(config="[policy\n"), "c.toml", "malformed TOML"),
    ("config unknown section", dict(config="[polcy]\nk = 3\n"), "[polcy]", "unknown section"),
    ("tree too large for exact linkage", dict(config="[tree]\nexact_max = 50000\n"), "[tree]: field 'exact_max'",
     "400 MB"),
]


@pytest.mark.parametrize("name, kw, where, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, capsys, name, kw, where, words):
    code, err, run_dir = run_init(tmp_path, capsys, **kw)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert where in lines[0] and words in lines[0]
    assert not run_dir.exists()
    assert not any(p.name.startswith(".run.") for p in tmp_path.iterdir())  # no temp folder left


def test_bad_features(tmp_path, capsys):
    f = tmp_path / "f.npy"
    x = np.ones((6, 4), np.float32)
    x[3, 2] = np.nan
    np.save(f, x)
    code, err, run_dir = run_init(tmp_path, capsys, features=f)
    assert code == 2 and "f.npy" in err and "NaN" in err and "3" in err and not run_dir.exists()
    np.save(f, np.ones((5, 4), np.float32))
    code, err, run_dir = run_init(tmp_path, capsys, features=f)
    assert code == 2 and "f.npy" in err and "5" in err and "6" in err and not run_dir.exists()


def test_existing_run_dir_is_left_as_it_was(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    code, err, _ = run_init(tmp_path, capsys)
    assert code == 2 and "already exists and is not empty" in err
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]


def test_good_init_then_run_and_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["init", str(run_dir), "--predictions", str(RESULTS_JSON), "--gt", str(GT_JSON),
                 "--crowd", "simulated", "--seed", "3"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["campaign"]["seed"] == 3
    assert main(["run", str(run_dir), "--rounds", "1"]) == 0
    assert main(["report", str(run_dir), "--json"]) == 0
    out = capsys.readouterr().out
    rep = json.loads(out[out.index("{"):])
    assert rep["total"]["rounds"] == 1 and rep == json.loads((run_dir / "report.json").read_text())


def test_run_on_a_missing_dir_is_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and len(err.strip().splitlines()) == 1


def test_input_errors_survive_pickling():
    """Errors raised in worker processes (Ray actors) reach the CLI whole."""
    import pickle

    from crowdprop.errors import InputError

    e = pickle.loads(pickle.dumps(InputError("a.json", "record 3", "score", "out of range")))
    assert isinstance(e, InputError) and str(e) == "a.json: record 3: field 'score': out of range"


def _parsers():
    """(name, parser) of every command and subcommand."""
    import argparse

    from crowdprop.cli import build_parser

    out = []

    def walk(prefix, p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    out.append((f"{prefix} {name}".strip(), sp))
                    walk(f"{prefix} {name}", sp)

    walk("", build_parser())
    return out


def test_every_help_has_a_description_and_an_example():
    cmds = _parsers()
    assert {"hits", "bonus", "estimate", "gold import"} <= {n for n, _ in cmds}
    for name, p in cmds:
        assert p.description and p.description[0].islower() and not p.description.endswith("."), name
        assert f"crowdprop {name.split()[0]}" in (p.epilog or ""), f"{name}: --help shows no example"


def test_verbosity_after_the_command_and_no_broken_pipe_traceback(tmp_path):
    import subprocess
    import sys

    # -q after the command (errors only), and stdout closed by `head` mid-output: no traceback, exit 0
    code = ("import sys\nfrom crowdprop import cli\nfrom crowdprop.commands import synth\n"
            "def run(args):\n    assert args.quiet and args.verbose == 0\n"
            "    for i in range(100000): print('line', i)\n    return 0\n"
            "synth.run = run\nsys.exit(cli.main(['synth', '--masks', '1', '--classes', '1', '-o', 'x', '-q']))\n")
    p = subprocess.run(f"{sys.executable} -c \"$CODE\" | head -1", shell=True, capture_output=True, text=True,
                       env={**__import__("os").environ, "CODE": code}, cwd=tmp_path)
    assert p.stdout == "line 0\n" and p.stderr == "", p.stderr
    from crowdprop.cli import build_parser

    args = build_parser().parse_args(["status", "runs/x", "-vv"])
    assert args.verbose == 2 and args.quiet is False


# ----------------------------------------------------------------------------- --images at init, image hosting
GT_FILES = dict(GT, images=[dict(im, file_name=f"im{im['id']}.png") for im in GT["images"]])


def _photo(path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(path)


def test_init_records_the_images_folder_and_refuses_a_wrong_one_in_one_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("im1.png", "im2.png"):
        _photo(photos / name)
    (tmp_path / "empty").mkdir()
    preds_p = write(tmp_path / "preds.json", [pred(i) for i in range(6)])
    run_dir = tmp_path / "run"
    base = ["init", str(run_dir), "--predictions", str(preds_p), "--crowd", "simulated"]
    with_gt = base + ["--gt", str(write(tmp_path / "gt.json", GT_FILES))]
    for argv, words in [
        (with_gt + ["--images", str(tmp_path / "nope")], [f"{tmp_path / 'nope'}: field '--images': not a folder"]),
        (with_gt + ["--images", str(tmp_path / "empty")],
         [f"{tmp_path / 'empty'}: field '--images': holds none of the 2 images of", "'im1.png'"]),
        (base[:4] + ["--images", str(photos)], ["field '--images': needs --gt"]),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err
        assert not run_dir.exists()
    assert main(with_gt + ["--images", str(photos)]) == 0
    assert f"masks are drawn on the photos in {photos.resolve()}" in capsys.readouterr().out
    campaign = json.loads((run_dir / "campaign.json").read_text())
    assert campaign["sources"]["images"] == str(photos.resolve()) and "image_root" not in campaign["crowd"]
    # without --images: a folder 'images' next to the ground truth when it holds every image
    (tmp_path / "g2").mkdir()
    gt2 = write(tmp_path / "g2" / "gt.json", GT_FILES)
    (tmp_path / "g2" / "images").mkdir()
    _photo(tmp_path / "g2" / "images" / "im1.png")
    args = ["init", str(tmp_path / "r2"), "--predictions", str(preds_p), "--gt", str(gt2), "--crowd", "simulated"]
    assert main(args) == 0  # one image of two: not taken
    assert json.loads((tmp_path / "r2" / "campaign.json").read_text())["sources"]["images"] is None
    _photo(tmp_path / "g2" / "images" / "im2.png")
    assert main(args[:1] + [str(tmp_path / "r3")] + args[2:]) == 0
    sources = json.loads((tmp_path / "r3" / "campaign.json").read_text())["sources"]
    assert sources["images"] == str((tmp_path / "g2" / "images").resolve())


def test_init_reports_an_mturk_crowd_without_image_hosting_naming_the_toml(tmp_path):
    import subprocess
    import sys

    preds_p = write(tmp_path / "preds.json", [pred(i) for i in range(6)])
    gt_p = write(tmp_path / "gt.json", GT)
    tomls = {"me.toml": "[crowd]\nreward_usd = 0.05\n",
             "hosted.toml": "[mturk]\nimage_base_url = \"https://pictures.example.org/run\"\n"}
    for name, text in tomls.items():
        write(tmp_path / name, text)

    def init(run, *extra):
        return subprocess.run([sys.executable, "-m", "crowdprop", "init", run, "--predictions", str(preds_p),
                               "--gt", str(gt_p), *extra], capture_output=True, text=True, cwd=tmp_path)

    p = init("a", "--config", "me.toml")
    assert p.returncode == 0 and (tmp_path / "a" / "campaign.json").exists()  # a local endpoint may still serve it
    [line] = p.stderr.splitlines()
    assert "me.toml: [mturk]: field 's3_bucket': no image hosting (s3_bucket or image_base_url)" in line
    assert "crowdprop run will not publish on the MTurk sandbox or production" in line
    # run finds the same problem and names both the run's config.json and the TOML it came from
    from crowdprop.campaign.store import RunDir
    from crowdprop.crowd.factory import _image_target
    from crowdprop.crowd.targets import Target
    from crowdprop.errors import InputError

    run_a = RunDir(tmp_path / "a")
    with pytest.raises(InputError) as e:
        _image_target(run_a, Target(), run_a.config.mturk, None)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "a" / "config.json") + ": [mturk]: field 's3_bucket'")
    assert msg.endswith("this run's config.json was made from me.toml at init")
    p = init("b")
    [line] = p.stderr.splitlines()
    assert "no --config (defaults): [mturk]: field 's3_bucket'" in line
    for run, extra in (("c", ["--config", "hosted.toml"]), ("d", ["--config", "me.toml", "--crowd", "simulated"]),
                       ("e", ["--config", "me.toml", "-q"])):
        p = init(run, *extra)
        assert p.returncode == 0 and p.stderr == "", (run, p.stderr)
