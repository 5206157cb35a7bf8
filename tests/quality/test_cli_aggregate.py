"""``crowdprop aggregate`` end to end."""
from __future__ import annotations

import csv

import pytest

from crowdprop.cli import main

ANSWERS = """task,worker,label
a,x,yes
a,y,yes
a,z,no
b,x,no
b,y,no
c,x,yes
c,y,no
"""


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_majority_vote_file_values(tmp_path, capsys):
    (tmp_path / "ans.csv").write_text(ANSWERS, encoding="utf-8")
    out = tmp_path / "sub" / "labels.csv"
    rc = main(["aggregate", str(tmp_path / "ans.csv"), "--method", "mv", "-o", str(out)])
    assert rc == 0
    rows = read_rows(out)
    assert [(r["task"], r["label"]) for r in rows] == [("a", "1"), ("b", "0"), ("c", "0")]
    assert [float(r["probability"]) for r in rows] == pytest.approx([2 / 3, 0.0, 0.5], abs=1e-6)
    stdout = capsys.readouterr().out
    assert "3 tasks, 3 workers, 7 answers" in stdout
    assert "1 labeled yes, 2 labeled no" in stdout
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_gold_accuracy_is_computed_without_clamping(tmp_path, capsys):
    # x and y agree and z disagrees on every task; the gold says z is right on task a.
    rows = ["task,worker,label"]
    for t in "abcdef":
        rows += [f"{t},x,1", f"{t},y,1", f"{t},z,0"]
    (tmp_path / "ans.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "gold.csv").write_text("task,label\na,0\nb,1\nzz,1\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    rc = main(["aggregate", str(tmp_path / "ans.csv"), "--gold", str(tmp_path / "gold.csv"),
               "--method", "mv", "-o", str(out)])
    assert rc == 0
    labels = {r["task"]: (r["label"], float(r["probability"])) for r in read_rows(out)}
    assert labels["a"] == ("0", 0.0)  # clamped to the gold in the written labels
    assert labels["b"] == ("1", 1.0)
    assert labels["c"][0] == "1"
    # the blind fit says 1 on both answered golds: right on b, wrong on a
    assert "on 2 answered gold tasks): 0.5000 (1/2)" in capsys.readouterr().out


def test_onecoin_default_method_writes_probabilities(tmp_path):
    (tmp_path / "ans.csv").write_text(ANSWERS, encoding="utf-8")
    out = tmp_path / "labels.csv"
    assert main(["aggregate", str(tmp_path / "ans.csv"), "-o", str(out)]) == 0
    rows = read_rows(out)
    assert [r["task"] for r in rows] == ["a", "b", "c"]
    p = {r["task"]: float(r["probability"]) for r in rows}
    assert p["a"] > 0.5 > p["b"]
    assert all(0.0 <= v <= 1.0 for v in p.values())


@pytest.mark.parametrize("text, words", [
    ("task,worker,label\na,x,yes\na,x,no\n", "line 3: field 'worker'"),
    ("task,worker\na,x\n", "field 'label': missing column"),
])
def test_bad_input_exit_2_one_line(tmp_path, capsys, text, words):
    (tmp_path / "ans.csv").write_text(text, encoding="utf-8")
    out = tmp_path / "labels.csv"
    rc = main(["aggregate", str(tmp_path / "ans.csv"), "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("crowdprop aggregate: error: ")
    assert words in err
    assert not out.exists()


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["aggregate", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "crowdprop aggregate answers.csv --gold gold.csv" in text
    assert "does NOT see the gold" in text
