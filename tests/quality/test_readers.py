"""CSV readers: values read, and one-line errors naming file, line and field."""
from __future__ import annotations

import pytest

from crowdprop.errors import InputError
from crowdprop.quality import read_answers_csv, read_gold_csv


def write(tmp_path, text, name="a.csv", raw=None):
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_reads_labels_in_every_spelling(tmp_path):
    p = write(tmp_path, "\ufeffTask,Worker,Label,seconds\n"
                        "m1,a,YES,3\n m1 , b ,no,4\nm2,a,True,1\n\nm2,b,false,2\nm3,a,1,0\nm3,b,0,0\n")
    df = read_answers_csv(p)
    assert df.task.tolist() == ["m1", "m1", "m2", "m2", "m3", "m3"]
    assert df.worker.tolist() == ["a", "b", "a", "b", "a", "b"]
    assert df.label.tolist() == [1, 0, 1, 0, 1, 0]
    assert str(df.label.dtype) == "int64"


def test_task_keys_stay_text(tmp_path):
    df = read_gold_csv(write(tmp_path, "task,label\n007,1\n7,0\n"))
    assert df.task.tolist() == ["007", "7"]
    assert df.label.tolist() == [1, 0]


@pytest.mark.parametrize("text, where", [
    ("task,label\nm1,1\n", "line 1: field 'worker': missing column"),
    ("task,worker,label\nm1,a,1\nm2,b,maybe\n", "line 3: field 'label': 'maybe' is not a label"),
    ("task,worker,label\nm1,a,1\nm2,,1\n", "line 3: field 'worker': empty worker"),
    ("task,worker,label\n,a,1\n", "line 2: field 'task': empty task"),
    ("task,worker,label\nm1,a,1\nm2,a,0\nm1,a,0\n", "line 4: field 'worker': worker 'a' already answered task 'm1' on line 2"),
    ("task,worker,label\nm1,a\n", "line 2: malformed CSV: 2 fields, the header has 3"),
    ("task,worker,label\nm1,\"a,1\n", "malformed CSV"),
    ("task,worker,label\n", "no answers"),
    ("", "empty file"),
    ("task,worker,label,label\nm1,a,1,1\n", "line 1: field 'label': column appears twice"),
])
def test_answer_errors_name_line_and_field(tmp_path, text, where):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        read_answers_csv(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": ")
    assert where in msg
    assert "\n" not in msg


def test_non_utf8_names_the_line(tmp_path):
    p = write(tmp_path, None, raw=b"task,worker,label\nm1,a,1\nm2,\xe9t\xe9,1\n")
    with pytest.raises(InputError, match=r"line 3: not UTF-8"):
        read_answers_csv(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_answers_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize("text, where", [
    ("task,label\nm1,1\nm1,1\n", "line 3: field 'task': task 'm1' is already listed on line 2"),
    ("task,label\nm1,2\n", "line 2: field 'label': '2' is not a label"),
    ("task,lbl\nm1,1\n", "line 1: field 'label': missing column"),
    ("task,label\n", "no gold labels"),
])
def test_gold_errors(tmp_path, text, where):
    p = write(tmp_path, text, name="g.csv")
    with pytest.raises(InputError) as e:
        read_gold_csv(p)
    assert where in str(e.value)


def test_fast_and_line_by_line_paths_agree(tmp_path):
    body = "task,worker,label\nm1,a,YES\n m1 , b ,no\n007,a,True\n"
    fast = read_answers_csv(write(tmp_path, body, name="fast.csv"))
    # a row of empty cells is skipped but sends the reader down the line-by-line path
    slow = read_answers_csv(write(tmp_path, body + ",,\n", name="slow.csv"))
    assert fast.to_dict("list") == slow.to_dict("list") == {
        "task": ["m1", "m1", "007"], "worker": ["a", "b", "a"], "label": [1, 0, 1]}
    assert [str(d) for d in fast.dtypes] == [str(d) for d in slow.dtypes]
    gf = read_gold_csv(write(tmp_path, "task,label\nm1,no\n", name="gf.csv"))
    gs = read_gold_csv(write(tmp_path, "task,label\n,\nm1,no\n", name="gs.csv"))
    assert gf.to_dict("list") == gs.to_dict("list") == {"task": ["m1"], "label": [0]}


def test_quoted_fields(tmp_path):
    df = read_answers_csv(write(tmp_path, 'task,worker,label\n"m,1","a ""b""",yes\n'))
    assert df.to_dict("list") == {"task": ["m,1"], "worker": ['a "b"'], "label": [1]}
    with pytest.raises(InputError, match="line 2: malformed CSV"):
        read_answers_csv(write(tmp_path, 'task,worker,label\nm1,"a"b,1\n', name="b.csv"))
