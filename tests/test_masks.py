import json

import numpy as np
import pytest
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
