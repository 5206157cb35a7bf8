"""The streaming JSON reader: the same values as json.loads for well-formed files, and a
refusal (then the whole-file reader's exact message) for anything else."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.errors import InputError
from crowdprop.masks import coco, jsonstream, load_ground_truth, load_predictions


def _collect(path, block):
    """Rebuild the document from the reader's events."""
    out, cur = None, None
    for ev in jsonstream.events(path, block):
        if ev[0] == "array" and ev[1] is None and out is None:
            out = cur = []
        elif ev[0] == "object":
            out = {}
        elif ev[0] == "array":
            out[ev[1]] = cur = []
        elif ev[0] == "items":
            cur.extend(jsonstream.parse_items(ev[2]))
        elif ev[0] == "value":
            out[ev[1]] = ev[2]
    return out


tricky = st.sampled_from(['a', 'x"y', 'b\\', '\\"', '{[,]}:', 'é', '\\\\"', '', ' ] , [ '])
scalars = st.one_of(st.integers(-5, 10**12), st.floats(allow_nan=False, allow_infinity=False), tricky,
                    st.text(alphabet='ab\\"{}[],: é', max_size=6), st.booleans(), st.none())
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(st.text(alphabet='ab"}{\\', max_size=3), c,
                                                                   max_size=4)), max_leaves=12)
documents = st.one_of(st.lists(values, max_size=6),
                      st.dictionaries(st.sampled_from(["images", "annotations", "info", 'x"y', "categories"]),
                                      st.one_of(st.lists(values, max_size=5), values), max_size=5))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, indent=st.sampled_from([None, 1]), ascii_only=st.booleans(),
       block=st.sampled_from([1, 2, 3, 7, 64, 4096]), damage=st.one_of(st.none(), st.tuples(
           st.floats(0, 1), st.sampled_from(["", ",", "]", "}", '"', "x", "\\", "[", "{", "\xff"]), st.integers(0, 1))))
def test_events_give_json_loads_values_or_refuse(tmp_path_factory, doc, indent, ascii_only, block, damage):
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    if damage is not None:
        at = int(damage[0] * len(text))
        text = text[:at] + damage[1] + text[at + damage[2]:]
    p = tmp_path_factory.mktemp("js") / "doc.json"
    p.write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text else
                  text.replace("\xff", "").encode() + b"\xff")
    try:
        want = json.loads(p.read_bytes())
    except ValueError:
        with pytest.raises(jsonstream.Malformed):
            _collect(p, block)
        return
    assert _collect(p, block) == want


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _whole_file_message(p) -> str:
    try:
        json.load(open(p, "rb"))
    except json.JSONDecodeError as e:
        return f"{p}: line {e.lineno} column {e.colno}: malformed JSON: {e.msg}"
    raise AssertionError("the file is well-formed")


@pytest.mark.parametrize("tail", [",]", "] x", ", {]", "", ",\n\n  ]", "]]"])
def test_malformed_results_give_the_whole_file_message_even_after_a_bad_record(tmp_path, tail, monkeypatch):
    monkeypatch.setattr(jsonstream, "BLOCK", 64)
    good = json.load(open(RESULTS_JSON))[:30]
    bad = dict(good[1], score=7)  # a bad record early in the file; the JSON error comes first all the same
    text = json.dumps([good[0], bad] + good[2:])[:-1] + tail
    p = _write(tmp_path, "p.json", text)
    with pytest.raises(InputError) as e:
        load_predictions(p)
    assert str(e.value) == _whole_file_message(p)


def test_not_utf8_is_named_by_byte_wherever_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonstream, "BLOCK", 64)
    good = json.load(open(RESULTS_JSON))[:20]
    raw = json.dumps(good).encode()
    at = len(raw) - 40
    p = tmp_path / "p.json"
    p.write_bytes(raw[:at] + b"\xff" + raw[at + 1:])
    with pytest.raises(InputError, match=rf"byte {at}: not UTF-8 text"):
        load_predictions(p)


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(jsonstream, "BLOCK", 512)
    monkeypatch.setattr(coco, "BATCH", 7)


def _instances(**kw):
    g = json.load(open(GT_JSON))
    g.update(kw)
    return g


@pytest.mark.parametrize("order", [("images", "annotations", "categories"), ("categories", "images", "annotations"),
                                   ("annotations", "images", "categories")])
def test_ground_truth_in_any_key_order_is_the_same_table(tmp_path, small_pieces, order):
    g = _instances()
    want = load_ground_truth(GT_JSON)
    p = _write(tmp_path, "gt.json", json.dumps({k: g[k] for k in ("info",) + order if k in g}))
    got = load_ground_truth(p)
    for name in ("images", "categories", "annotations"):
        assert getattr(got, name).equals(getattr(want, name)), name


@pytest.mark.parametrize("damage, expect", [
    # categories after annotations (COCO's order): an unknown category is still named at its record
    (lambda g: g["annotations"][5].update(category_id=999),
     "annotations[5] (id={id5}): field 'category_id': category 999 is not in 'categories'"),
    # the unknown category comes first, even when the same record's segmentation is bad too
    (lambda g: g["annotations"][5].update(category_id=999, segmentation={"size": [1, 1], "counts": "x"}),
     "annotations[5] (id={id5}): field 'category_id': category 999 is not in 'categories'"),
    # an unknown category earlier in the same batch as a bad segmentation
    (lambda g: (g["annotations"][2].update(category_id=999),
                g["annotations"][5].update(segmentation={"size": [1, 1], "counts": "x"})),
     "annotations[2] (id={id2}): field 'category_id': category 999 is not in 'categories'"),
    # an earlier bad segmentation comes before a later unknown category
    (lambda g: (g["annotations"][3].update(segmentation={"size": g["annotations"][3]["segmentation"]["size"]
                                                          if isinstance(g["annotations"][3]["segmentation"], dict)
                                                          else [1, 1], "counts": 5}),
                g["annotations"][20].update(category_id=999)),
     "annotations[3] (id={id3}): field 'segmentation"),
    # a bad category record (listed last) comes before any annotation's error
    (lambda g: (g["annotations"][2].update(image_id=-4), g["categories"][1].update(name=" ")),
     "categories[1] (id={cat1}): field 'name': empty class name"),
    (lambda g: g.pop("categories"), "field 'categories': missing or not a list"),
])
def test_ground_truth_errors_come_in_the_order_of_reading_it_whole(tmp_path, small_pieces, damage, expect):
    g = _instances()
    g = {k: g[k] for k in ("info", "images", "annotations", "categories") if k in g}
    damage(g)
    p = _write(tmp_path, "gt.json", json.dumps(g))
    with pytest.raises(InputError) as e:
        load_ground_truth(p)
    anns = g["annotations"]
    words = expect.format(id5=anns[5]["id"], id3=anns[3]["id"], id2=anns[2]["id"],
                          cat1=g.get("categories", [{}, {"id": 0}])[1]["id"])
    assert str(e.value).startswith(f"{p}: {words}"), str(e.value)
    # the same answer as the whole-file reader
    with pytest.raises(InputError) as whole:
        coco._ground_truth_whole(p)
    assert str(e.value) == str(whole.value)


def test_worker_processes_give_the_same_masks_table(tmp_path, small_pieces):
    from crowdprop.engine import make_engine

    gt = load_ground_truth(GT_JSON)
    one = load_predictions(RESULTS_JSON, gt)
    with make_engine("local", workers=2) as engine:
        two = load_predictions(RESULTS_JSON, gt, engine=engine)
        gt2 = load_ground_truth(GT_JSON, engine=engine)
    assert one.equals(two) and gt2.annotations.equals(gt.annotations)
    assert len(one) == 734 and np.isfinite(one["gt_iou"]).all()
