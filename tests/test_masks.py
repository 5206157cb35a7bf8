import copy
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.errors import InputError
from crowdprop.masks import load_ground_truth, load_predictions, rle


@pytest.fixture(scope="module")
def gt():
    return load_ground_truth(GT_JSON)


def test_real_sample_numbers_match_the_data_readme(gt):
    masks = load_predictions(RESULTS_JSON, gt)
    assert len(masks) == 734
    assert masks["image_id"].nunique() == 99
    # Documented in tests/data/README.md: 54.6 % have IoU >= 0.7, median IoU 0.727.
    assert round(float((masks["gt_iou"] >= 0.7).mean()), 3) == 0.546
    assert abs(float(masks["gt_iou"].median()) - 0.727) < 0.001
    assert len(gt.annotations) == 839 and int(gt.annotations["iscrowd"].sum()) == 9


def test_gt_iou_is_best_same_class_match(gt):
    masks = load_predictions(RESULTS_JSON, gt)
    raw = json.load(open(RESULTS_JSON))
    anns = json.load(open(GT_JSON))["annotations"]
    imgs = {im["id"]: im for im in json.load(open(GT_JSON))["images"]}
    for i in (0, 100, 500):
        r = raw[i]
        im = imgs[r["image_id"]]
        cands = [a for a in anns if a["image_id"] == r["image_id"] and a["category_id"] == r["category_id"]
                 and not a["iscrowd"]]
        objs = [cocomask.merge(cocomask.frPyObjects(a["segmentation"], im["height"], im["width"])) for a in cands]
        pred = {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        expect = max(cocomask.iou([pred], objs, [0] * len(objs))[0]) if objs else 0.0
        assert masks["gt_iou"].iloc[i] == pytest.approx(expect)


def test_rle_round_trip_and_length():
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        m = (rng.random((h, w)) < 0.4).astype(np.uint8)
        c = rle.encode(m)
        assert np.array_equal(rle.decode(c, h, w), m)
        assert rle.compressed_length(c, h, w) == h * w
        assert rle.area([c], [h], [w])[0] == m.sum()


def test_area_handles_more_than_255_masks():
    m = np.zeros((8, 8), np.uint8)
    m[:3, :2] = 1
    c = rle.encode(m)
    assert rle.area([c] * 600, [8] * 600, [8] * 600).tolist() == [6.0] * 600


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def _pred(**kw):
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:7] = 1
    r = {"image_id": 1, "category_id": 1, "score": 0.9,
         "segmentation": {"size": [10, 12], "counts": rle.encode(m)}}
    r.update(kw)
    return r


GT_SMALL = {"images": [{"id": 1, "height": 10, "width": 12}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": []}


@pytest.mark.parametrize("records, field, words", [
    ([_pred(image_id=7)], "image_id", "not in the ground truth"),
    ([_pred(segmentation={"size": [11, 12], "counts": "PPYo0"})], "segmentation.size", "disagrees"),
    ([_pred(segmentation=[[1, 1, 5, 1]])], "segmentation[0]", "2 points"),
    ([_pred(id=3), _pred(id=3)], "id", "duplicate"),
    ([_pred(score=float("nan"))], "score", "[0, 1]"),
    ([_pred(category_id=9)], "category_id", "not in the ground truth"),
    ([_pred(segmentation={"size": [10, 12], "counts": [5, 3]})], "segmentation.counts", "covers 8 pixels"),
    ([_pred(segmentation={"size": [10, 12], "counts": [120]})], "segmentation", "empty mask"),
])
def test_bad_predictions_name_record_and_field(tmp_path, records, field, words):
    g = load_ground_truth(_write(tmp_path, "gt.json", GT_SMALL))
    p = _write(tmp_path, "p.json", records)
    with pytest.raises(InputError) as e:
        load_predictions(p, g)
    msg = str(e.value)
    assert msg.startswith(str(p)) and f"field '{field}'" in msg and words in msg and "record" in msg
    assert "\n" not in msg


def test_malformed_json_names_line(tmp_path):
    p = _write(tmp_path, "p.json", '[{"image_id": 1,\n "score": }]')
    with pytest.raises(InputError, match=r"line 2 column \d+.*malformed JSON"):
        load_predictions(p)


def test_empty_class_name_in_gt(tmp_path):
    bad = dict(GT_SMALL, categories=[{"id": 1, "name": "  "}])
    with pytest.raises(InputError, match=r"categories\[0\] \(id=1\): field 'name': empty class name"):
        load_ground_truth(_write(tmp_path, "gt.json", bad))


def test_polygons_rasterised_with_gt_sizes(tmp_path):
    g = load_ground_truth(_write(tmp_path, "gt.json", GT_SMALL))
    p = _write(tmp_path, "p.json", [_pred(segmentation=[[2, 2, 8, 2, 8, 6, 2, 6]])])
    masks = load_predictions(p, g)
    dense = rle.decode(masks["rle"].iloc[0], 10, 12)
    assert dense.shape == (10, 12)
    assert 20 <= dense.sum() <= 35  # a 6 x 4 rectangle, pycocotools rasterisation
    assert masks["bbox_w"].iloc[0] >= 6


def test_polygon_far_outside_its_image_is_refused_before_rasterising(tmp_path):
    # pycocotools crashes the process on coordinates around 1e7-1e9: refused with one line instead
    g = load_ground_truth(_write(tmp_path, "gt.json", GT_SMALL))
    p = _write(tmp_path, "p.json", [_pred(), _pred(segmentation=[[2, 2, 8, 2, 8, 6], [1, 1, 1e9, 1, 5, 5]])])
    with pytest.raises(InputError) as e:
        load_predictions(p, g)
    assert str(e.value) == (f"{p}: record 1: field 'segmentation[1]': x coordinate 1000000000.0 is far outside "
                            "the 10x12 image (allowed -12 to 24)")
    p = _write(tmp_path, "p.json", [_pred(segmentation=[[2, -10.5, 8, 2, 8, 6]])])
    with pytest.raises(InputError, match=r"record 0: field 'segmentation\[0\]': y coordinate -10.5 .*-10 to 20"):
        load_predictions(p, g)
    # a point just outside the image is fine (detectors and annotators do that)
    p = _write(tmp_path, "p.json", [_pred(segmentation=[[-3, -2, 14, 2, 8, 11]])])
    assert load_predictions(p, g)["area"].iloc[0] > 0


def _random_masks(rng, n, h, w):
    out = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        kind = rng.integers(3)
        if kind == 0:
            m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        elif kind == 1:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = 1
        out.append(rle.encode(m))
    return out


def test_vectorised_rle_summaries_equal_pycocotools():
    rng = np.random.default_rng(5)
    counts, hs, ws = [], [], []
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        c = _random_masks(rng, 30, h, w)
        counts += c
        hs += [h] * len(c)
        ws += [w] * len(c)
    runs, offs = rle.runs_many(counts)
    assert rle.totals_many(runs, offs).tolist() == [h * w for h, w in zip(hs, ws)]
    assert rle.areas_many(runs, offs).tolist() == rle.area(counts, hs, ws).tolist()
    np.testing.assert_array_equal(rle.bbox_many(counts, runs, offs, hs, ws), rle.bbox(counts, hs, ws))
    # an empty first foreground run: pycocotools leaves it out of the box, and so do we
    odd = [cocomask.frPyObjects({"size": [4, 3], "counts": [0, 0, 5, 7]}, 4, 3)["counts"].decode()]
    r, o = rle.runs_many(odd)
    np.testing.assert_array_equal(rle.bbox_many(odd, r, o, [4], [3]), rle.bbox(odd, [4], [3]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 5), st.lists(st.integers(0, 4), max_size=12)),
                min_size=1, max_size=8))
def test_boxes_of_runs_with_empty_runs_equal_pycocotools(masks):
    """Runs as any RLE may hold them (empty runs anywhere, an odd or even number of runs,
    a first foreground run at pixel 0): pycocotools' boxes and areas (a mask without
    foreground pixels, where pycocotools' box wraps around, gets [0, 0, 0, 0])."""
    counts, hs, ws = [], [], []
    for h, w, cnts in masks:
        cnts = list(cnts)
        while sum(cnts) > h * w:
            cnts.pop()
        cnts.append(h * w - sum(cnts))
        counts.append(cocomask.frPyObjects({"size": [h, w], "counts": cnts}, h, w)["counts"].decode())
        hs.append(h)
        ws.append(w)
    runs, offs = rle.runs_many(counts)
    area = rle.areas_many(runs, offs)
    assert area.tolist() == rle.area(counts, hs, ws).tolist()
    want = np.where(area[:, None] > 0, rle.bbox(counts, hs, ws), 0.0)
    np.testing.assert_array_equal(rle.bbox_many(counts, runs, offs, hs, ws), want)


def test_iou_pairs_equal_pycocotools_iou():
    rng = np.random.default_rng(8)
    for h, w in ((1, 1), (7, 5), (16, 23)):
        c = _random_masks(rng, 25, h, w)
        runs, offs = rle.runs_many(c)
        iv, area = rle.intervals_many(runs, offs), rle.areas_many(runs, offs)
        ia, ib = np.repeat(np.arange(len(c)), len(c)), np.tile(np.arange(len(c)), len(c))
        got = rle.iou_pairs(iv, iv, area, area, ia, ib)
        want = np.asarray(cocomask.iou([rle.to_coco(s, h, w) for s in c], [rle.to_coco(s, h, w) for s in c],
                                       [0] * len(c))).reshape(-1)
        np.testing.assert_array_equal(got, want)


def test_match_ground_truth_is_the_best_same_class_instance_for_every_mask(gt):
    """Every mask of the sample against pycocotools on its image's same-class instances: the
    highest IoU, ties and no overlap going to the first instance in file order, -1 without one."""
    masks = load_predictions(RESULTS_JSON, gt)
    ann = gt.annotations[gt.annotations["iscrowd"] == 0]
    checked = 0
    for r in masks.itertuples(index=False):
        g = ann[(ann["image_id"] == r.image_id) & (ann["category_id"] == r.category_id)]
        if len(g) == 0:
            assert (r.gt_iou, r.gt_ann_id) == (0.0, -1)
            continue
        m = np.asarray(cocomask.iou([rle.to_coco(r.rle, r.height, r.width)],
                                    [rle.to_coco(s, r.height, r.width) for s in g["rle"]], [0] * len(g)))[0]
        assert r.gt_iou == m.max() and r.gt_ann_id == g["id"].iloc[int(m.argmax())]
        checked += 1
    assert checked > 600


@pytest.fixture
def small_batches(monkeypatch):
    from crowdprop.masks import coco

    monkeypatch.setattr(coco, "BATCH", 3)


BAD_RLE = {"size": [10, 12], "counts": "PP~o0"}  # '~' is outside the RLE alphabet


@pytest.mark.parametrize("records, expect", [
    # the first bad record in file order is reported, whichever check (per record, or the
    # batch's RLE decoding) finds it, within a batch and across batches
    ([_pred(), _pred(segmentation=BAD_RLE), _pred(), _pred(score=2)],
     "record 1: field 'segmentation.counts': bad compressed RLE: invalid character in RLE counts string"),
    ([_pred(), _pred(score=2), _pred(segmentation=BAD_RLE)],
     "record 1: field 'score': expected a number in [0, 1], got 2"),
    ([_pred(), _pred(), _pred(), _pred(), _pred(segmentation={"size": [10, 12], "counts": "0"}), _pred(score=2)],
     "record 4: field 'segmentation.counts': RLE covers 0 pixels, size 10x12 has 120"),
    ([_pred(id=5), _pred(id=6), _pred(id=7), _pred(id=3), _pred(id=4), _pred(id=6)],
     "record 5 (id=6): field 'id': duplicate id (also record 1)"),
    ([_pred(id=5), _pred(id=6), _pred(id=7), _pred(id=8.0), _pred(id=8)],
     "record 4 (id=8): field 'id': duplicate id (also record 3)"),
    ([_pred(id=1), _pred(id=2), _pred(id=3), _pred()], "record 3: field 'id': either every record has an id or none does"),
    ([_pred(), _pred(), _pred(), _pred(id=4)],
     "record 3 (id=4): field 'id': either every record has an id or none does"),
    ([_pred(), _pred(), _pred(), _pred(), _pred(segmentation={"size": [10, 12], "counts": [120]}), _pred()],
     "record 4: field 'segmentation': empty mask (0 pixels)"),
])
def test_batched_validation_reports_the_first_bad_record(tmp_path, small_batches, records, expect):
    g = load_ground_truth(_write(tmp_path, "gt.json", GT_SMALL))
    p = _write(tmp_path, "p.json", records)
    with pytest.raises(InputError) as e:
        load_predictions(p, g)
    assert str(e.value) == f"{p}: {expect}"


def test_batched_validation_gives_the_same_table_as_record_by_record(tmp_path, small_batches, gt, monkeypatch):
    """Batches that take the fast path and batches checked record by record (an integral float
    id, polygons, uncompressed RLE) give one table, equal to checking every record on its own."""
    from crowdprop.masks import batches

    raw = json.load(open(RESULTS_JSON))
    raw[4]["image_id"] = float(raw[4]["image_id"])
    seg = raw[9]["segmentation"]
    raw[9]["segmentation"] = {"size": seg["size"], "counts": rle.runs_many([seg["counts"]])[0].tolist()}
    p = _write(tmp_path, "p.json", raw)
    mixed = load_predictions(p, gt)
    monkeypatch.setattr(batches, "predictions_typed", lambda body, ref: batches.UNDECIDED)
    monkeypatch.setattr(batches, "predictions_fast", lambda records, ref: None)
    slow = load_predictions(p, gt)
    pd.testing.assert_frame_equal(mixed, slow)
    assert mixed["image_id"].iloc[4] == raw[4]["image_id"] and len(mixed) == len(raw)


# Typed decoding (msgspec) of a run of records: the same columns as json.loads and the
# checks on dicts, or "undecided" (then json and the dict checks decide, as before).
_ODD = [0, 1, 2, 5.0, 0.5, 1e-300, -0.0, True, False, None, "1", [], {}, 2**63 - 1, 2**63, 2**64, -2**63 - 1,
        float("nan"), float("inf"), [10, 12], [10, 12, 1], {"size": [10, 12], "counts": "0"}, [[1, 1, 5, 1, 3, 3]]]
_FIELDS = ["id", "image_id", "category_id", "score", "segmentation", "pred_iou", "predicted_iou", "mask_iou",
           "iscrowd", "area", "bbox", "extra"]
_SEG_FIELDS = ["size", "counts", "extra"]


def _typed_case(kind, records, raw_tail=""):
    from crowdprop.masks import batches, jsonstream

    ref = batches.Reference.of([1, 2], [10, 10], [12, 12], [1, 3])
    body = (",".join(json.dumps(r) for r in records) + raw_tail).encode("utf-8", "surrogatepass")
    typed, fast = ((batches.predictions_typed, batches.predictions_fast) if kind == "pred" else
                   (batches.annotations_typed, batches.annotations_fast))
    got = typed(body, ref)
    if got is batches.UNDECIDED:
        return None
    want = fast(jsonstream.parse_items(body), ref)  # whatever typed decodes, json reads too
    assert (got is None) == (want is None)
    if got is not None:
        assert got.keys() == want.keys()
        for k in got:
            if isinstance(got[k], np.ndarray):
                assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k], equal_nan=True), k
            else:
                assert got[k] == want[k], k
    return got


def test_typed_runs_decide_plain_records_like_json():
    for kind in ("pred", "ann"):
        base = [_pred(id=7 + k, score=0.25 * k, pred_iou=0.5, bbox=[3, 2, 4, 3]) for k in range(4)]
        if kind == "ann":
            base = [{**r, "iscrowd": k % 2, "area": 12} for k, r in enumerate(base)]
            for r in base:
                del r["score"], r["pred_iou"]
        got = _typed_case(kind, base)
        assert got is not None and got["area"].tolist() == [12.0] * 4
        assert (got["mask_id"] if kind == "pred" else got["id"]).tolist() == [7, 8, 9, 10]
        # a repeated key: the last one counts, as in json.loads
        dup = json.dumps(base[0])[:-1] + ', "category_id": 3}'
        assert _typed_case(kind, base[1:], "," + dup)["category_id"].tolist() == [1, 1, 1, 3]
    for f in ("pred_iou", "predicted_iou", "mask_iou"):  # whichever field carries the predicted IoU
        assert _typed_case("pred", [_pred(**{f: 0.25}), _pred(**{f: 1})])["pred_iou"].tolist() == [0.25, 1.0]
    assert _typed_case("pred", [_pred(mask_iou=0.5, predicted_iou=0.25)] * 2)["pred_iou"].tolist() == [0.25] * 2
    assert _typed_case("pred", [_pred(pred_iou=0.5, predicted_iou=0.25), _pred(predicted_iou=0.25)]) is None
    pred = _pred()
    counts = pred["segmentation"]["counts"]
    escaped = json.dumps(pred).replace(json.dumps(counts), '"' + "".join(f"\\u{ord(c):04x}" for c in counts) + '"')
    assert _typed_case("pred", [pred], "," + escaped)["rle"] == [counts, counts]
    # json reads these, and typed decoding leaves them to it
    for tail in (', {"x": "\\ud800"}', ', {"image_id": NaN}', ', {"x": ' + "[" * 990 + "]" * 990 + "}"):
        assert _typed_case("pred", [pred], tail) is None
    body = json.dumps(_pred(extra="caf\xe9")).encode("latin-1")  # not UTF-8 in a field that is not read
    from crowdprop.masks import batches

    assert batches.predictions_typed(body, batches.Reference()) is batches.UNDECIDED


@settings(max_examples=250, deadline=None)
@given(kind=st.sampled_from(["pred", "ann"]), n=st.integers(1, 4), ids=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.sampled_from(_FIELDS + _SEG_FIELDS),
                                st.sampled_from(range(len(_ODD) + 1))), max_size=3))
def test_typed_runs_agree_with_json_or_stay_undecided(kind, n, ids, edits):
    records = [_pred(**({"id": k + 1} if ids or kind == "ann" else {})) for k in range(n)]
    if kind == "ann":
        for r in records:
            del r["score"]
    for k, inner, field, v in edits:
        r = records[k % n]
        target = r["segmentation"] if inner and isinstance(r.get("segmentation"), dict) else r
        if v == len(_ODD):
            target.pop(field, None)
        else:
            target[field] = copy.deepcopy(_ODD[v])
    _typed_case(kind, records)


@pytest.mark.parametrize("images, expect", [
    ([{"id": 1, "height": 10, "width": 12}, {"id": 2.0, "height": 10, "width": 12, "file_name": "b.png"}], None),
    ([{"id": 1, "height": 10, "width": 12}, {"id": 1, "height": 10, "width": 12}],
     "images[1] (id=1): field 'id': duplicate image id"),
    ([{"id": 1, "height": 10, "width": 12}, {"id": 3, "height": 0, "width": 12}],
     "images[1] (id=3): field 'height': image size must be positive, got 0x12"),
    ([{"id": 1, "height": 10, "width": 12}, {"id": True, "height": 10, "width": 12}],
     "record 1 (id=True): field 'id': expected an integer, got True"),
    ([{"id": 1, "height": 10, "width": 12}, {"id": 2, "width": 12}], "record 1 (id=2): field 'height': missing"),
])
def test_images_checked_together_read_like_one_by_one(tmp_path, images, expect):
    """Images are checked column by column and, when one fails, one by one: the same table
    (an id written 2.0 is 2) and the same message."""
    p = _write(tmp_path, "gt.json", {**GT_SMALL, "images": images})
    if expect is None:
        g = load_ground_truth(p)
        assert g.images["id"].tolist() == [1, 2] and g.images["file_name"].tolist() == ["", "b.png"]
        assert g.images.dtypes["id"] == np.int64
        return
    with pytest.raises(InputError) as e:
        load_ground_truth(p)
    assert str(e.value) == f"{p}: {expect}"


def test_write_instances_writes_each_mask_as_a_coco_annotation(tmp_path):
    from crowdprop.masks import write_instances

    masks = pd.DataFrame({"mask_id": [7, 9], "image_id": [1, 2], "category_id": [3, 3], "score": [0.5, 0.25],
                          "pred_iou": [0.1, 0.2], "height": np.array([4, 5], dtype=np.int32),
                          "width": np.array([6, 7], dtype=np.int32), "rle": ["0b0", "1c0"], "area": [4.0, 5.0],
                          "bbox_x": [0.0, 1.0], "bbox_y": [1.0, 2.0], "bbox_w": [2.0, 3.0], "bbox_h": [3.0, 4.0]})
    images = pd.DataFrame({"id": [1, 2], "file_name": ["a.jpg", "b.jpg"], "height": [4, 5], "width": [6, 7]})
    cats = pd.DataFrame({"id": [3], "name": ["cat"], "supercategory": ["animal"]})
    n = write_instances(tmp_path / "out.json", masks, images, cats, info={"description": "x"},
                        attributes=[{"crowdprop_label": "accepted"}, {"crowdprop_label": "open"}])
    got = json.loads((tmp_path / "out.json").read_text())
    assert n == 2
    assert got["info"] == {"description": "x"} and got["categories"] == [{"id": 3, "name": "cat",
                                                                          "supercategory": "animal"}]
    assert got["images"] == [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6},
                             {"id": 2, "file_name": "b.jpg", "height": 5, "width": 7}]
    assert got["annotations"] == [
        {"id": 7, "image_id": 1, "category_id": 3, "segmentation": {"size": [4, 6], "counts": "0b0"}, "area": 4.0,
         "bbox": [0.0, 1.0, 2.0, 3.0], "iscrowd": 0, "score": 0.5, "attributes": {"crowdprop_label": "accepted"}},
        {"id": 9, "image_id": 2, "category_id": 3, "segmentation": {"size": [5, 7], "counts": "1c0"}, "area": 5.0,
         "bbox": [1.0, 2.0, 3.0, 4.0], "iscrowd": 0, "score": 0.25, "attributes": {"crowdprop_label": "open"}}]
    assert all(isinstance(a["area"], float) and isinstance(a["id"], int) for a in got["annotations"])
