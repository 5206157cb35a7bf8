"""Predictions from other tools: detectron2's instances_predictions.pth, Segment Anything's
amg.py --convert-to-rle output, and the COCO results JSON that MMDetection and detectron2
write, each built here in the exact shape those tools write from the shipped sample's
predictions, read into the same masks table as the sample's own COCO results."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.cli import main
from crowdprop.errors import InputError
from crowdprop.masks import load_ground_truth, load_predictions, rle
from crowdprop.masks.formats import read_category_map, read_predictions

KEY = ["image_id", "category_id", "score", "rle"]


@pytest.fixture(scope="module")
def gt():
    return load_ground_truth(GT_JSON)


@pytest.fixture(scope="module")
def reference(gt):
    """The shipped sample's COCO results, read by the COCO loader."""
    return load_predictions(RESULTS_JSON, gt)


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS_JSON.read_text())


def same_masks(a: pd.DataFrame, b: pd.DataFrame, cols=KEY + ["gt_iou", "gt_ann_id", "area"]) -> bool:
    a = a.sort_values(KEY).reset_index(drop=True)[cols]
    b = b.sort_values(KEY).reset_index(drop=True)[cols]
    return len(a) == len(b) and a.equals(b)


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- COCO JSON of MMDetection and detectron2


def test_mmdetection_segm_json_is_read_as_written(tmp_path, gt, reference, results):
    """CocoMetric(format_only=True, outfile_prefix=P) writes P.segm.json with records
    {image_id, bbox, score, category_id, segmentation} (counts decoded to text)."""
    recs = []
    for r in results:
        box = rle.bbox([r["segmentation"]["counts"]], [r["segmentation"]["size"][0]], [r["segmentation"]["size"][1]])[0]
        recs.append({"image_id": r["image_id"], "bbox": [float(v) for v in box], "score": float(r["score"]),
                     "category_id": r["category_id"], "segmentation": r["segmentation"]})
    assert list(recs[0]) == ["image_id", "bbox", "score", "category_id", "segmentation"]
    p = tmp_path / "results.segm.json"
    p.write_text(json.dumps(recs))
    masks, cats = read_predictions(p, gt)
    assert cats is None and same_masks(masks, reference)
    # its sibling with boxes only is named as such
    (tmp_path / "results.bbox.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "segmentation"}
                                                            for r in recs]))
    with pytest.raises(InputError, match=r"results.bbox.json: record 0: field 'segmentation': missing: this is "
                                         r"MMDetection's box file; pass the .segm.json"):
        read_predictions(tmp_path / "results.bbox.json", gt)


def test_detectron2_coco_instances_results_json_is_read_as_written(tmp_path, gt, reference, results):
    """COCOEvaluator writes coco_instances_results.json: {image_id, category_id, bbox, score,
    segmentation} with dataset category ids."""
    recs = [{"image_id": r["image_id"], "category_id": r["category_id"], "bbox": [1.5, 2.5, 30.0, 40.0],
             "score": r["score"], "segmentation": r["segmentation"]} for r in results]
    p = tmp_path / "coco_instances_results.json"
    p.write_text(json.dumps(recs))
    masks, _ = read_predictions(p, gt)
    assert same_masks(masks, reference)
    assert masks["bbox_w"].iloc[0] != 30.0  # boxes come from the masks, not from the file


# ----------------------------------------------------------------------------- detectron2 instances_predictions.pth


def detectron2_predictions(results, gt) -> list[dict]:
    """COCOEvaluator.process's layout: per image {image_id, instances}, category ids contiguous
    (the position of the dataset id among the sorted ground-truth ids, as load_coco_json maps them)."""
    contiguous = {c: i for i, c in enumerate(sorted(gt.categories["id"].tolist()))}
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append({
            "image_id": r["image_id"], "category_id": contiguous[r["category_id"]],
            "bbox": [0.0, 0.0, 10.0, 10.0], "score": r["score"],
            "segmentation": {"size": list(r["segmentation"]["size"]), "counts": r["segmentation"]["counts"]}})
    return [{"image_id": k, "instances": v} for k, v in by_image.items()]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_detectron2_pth_reads_like_the_coco_results(tmp_path, torch, gt, reference, results):
    preds = detectron2_predictions(results, gt)
    assert {r["category_id"] for p in preds for r in p["instances"]} != {r["category_id"] for r in results}
    p = tmp_path / "instances_predictions.pth"
    torch.save(preds, p)
    masks, cats = read_predictions(p, gt)
    assert cats is None and same_masks(masks, reference)
    # without ground truth the contiguous index is the category id
    bare, _ = read_predictions(p)
    want = np.sort([r["category_id"] for q in preds for r in q["instances"]])
    assert np.array_equal(np.sort(bare["category_id"].to_numpy()), want)


def test_detectron2_pth_never_unpickles_objects(tmp_path, torch, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "instances_predictions.pth"
    torch.save([{"image_id": 1, "instances": [], "x": Payload()}], p)
    assert not marker.exists()
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(p)])
    assert f"error: {p}: not a torch file of plain predictions (weights_only=True refuses pickled objects)" in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_detectron2_pth_without_torch_is_one_line(tmp_path, torch, capsys, monkeypatch, results, gt):
    p = tmp_path / "instances_predictions.pth"
    torch.save(detectron2_predictions(results[:5], gt), p)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(p), "--gt", str(GT_JSON)])
    assert f"{p}: reading detectron2's .pth predictions needs torch: pip install 'crowdprop[detect]'" in err


def test_detectron2_pth_errors_name_image_and_instance(tmp_path, torch, capsys, results, gt):
    preds = detectron2_predictions(results, gt)
    img = preds[3]["image_id"]
    # a contiguous index past the ground truth's categories
    bad = json.loads(json.dumps(preds))
    bad[3]["instances"][1]["category_id"] = 80
    p = tmp_path / "a.pth"
    torch.save(bad, p)
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(p), "--gt", str(GT_JSON)])
    assert (f"a.pth: predictions[3] (image_id={img}) instances[1]: field 'category_id': class index 80 is out "
            f"of range: the ground truth has 80 categories") in err
    # an RLE whose size disagrees with the image: found by the COCO loader, reported against the instance
    bad = json.loads(json.dumps(preds))
    bad[2]["instances"][0]["segmentation"]["size"] = [5, 5]
    bad[2]["instances"][0]["segmentation"]["counts"] = rle.encode(np.ones((5, 5), np.uint8))
    torch.save(bad, tmp_path / "b.pth")
    img = preds[2]["image_id"]
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "b.pth"),
                                  "--gt", str(GT_JSON)])
    assert f"b.pth: predictions[2] (image_id={img}) instances[0]: field 'segmentation.size': RLE size 5x5" in err
    # not detectron2's layout
    torch.save({"model": [1, 2]}, tmp_path / "c.pth")
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "c.pth")])
    assert "c.pth: expected detectron2's list of per-image predictions" in err
    torch.save([{"image_id": 1, "proposals": []}], tmp_path / "d.pth")
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "d.pth")])
    assert "d.pth: predictions[0] (image_id=1): field 'instances': missing" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- Segment Anything


def sam_folder(folder: Path, results, gt, image_ids, *, stems=None) -> dict[int, Path]:
    """amg.py --convert-to-rle output for ``image_ids``: one <image stem>.json per image, a list
    of the mask generator's records (segmentation as COCO RLE with text counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = dict(zip(gt.images["id"], gt.images["file_name"]))
    out = {}
    for k, iid in enumerate(image_ids):
        recs = []
        for j, r in enumerate(r for r in results if r["image_id"] == iid):
            seg = r["segmentation"]
            h, w = seg["size"]
            box = rle.bbox([seg["counts"]], [h], [w])[0]
            recs.append({"segmentation": seg, "area": int(rle.area([seg["counts"]], [h], [w])[0]),
                         "bbox": [float(v) for v in box], "predicted_iou": [0.91, 1.0234, 0.88][j % 3],
                         "point_coords": [[float(box[0]) + 1.0, float(box[1]) + 1.0]],
                         "stability_score": round(0.5 + r["score"] / 2, 4), "crop_box": [0, 0, w, h]})
        stem = stems[k] if stems else Path(names[iid]).stem
        out[iid] = folder / f"{stem}.json"
        out[iid].write_text(json.dumps(recs))
    return out


IMAGES = [139, 74, 164]


def test_sam_folder_with_one_class(tmp_path, results, gt, reference):
    sam_folder(tmp_path / "sam", results, gt, IMAGES)
    masks, cats = read_predictions(tmp_path / "sam", gt, category="dog")
    dog = int(gt.categories.set_index("name").loc["dog", "id"])
    assert cats is None and set(masks["category_id"]) == {dog}
    ref = reference[reference["image_id"].isin(IMAGES)]
    # same masks, on the images their file names name (ground truth file_name stems)
    a = masks.sort_values(["image_id", "rle"]).reset_index(drop=True)
    b = ref.sort_values(["image_id", "rle"]).reset_index(drop=True)
    assert len(a) == len(b) > 0 and a["image_id"].tolist() == b["image_id"].tolist()
    assert a["rle"].tolist() == b["rle"].tolist() and a["area"].tolist() == b["area"].tolist()
    # stability_score is the score; predicted_iou the predicted IoU, clipped to [0, 1]
    assert np.allclose(a["score"], np.round(0.5 + b["score"] / 2, 4))
    assert set(np.round(masks["pred_iou"], 4)) == {0.91, 1.0, 0.88}
    # file order, then record order (what --features rows follow)
    order = sorted(IMAGES, key=lambda i: Path(dict(zip(gt.images["id"], gt.images["file_name"]))[i]).stem)
    assert masks["image_id"].drop_duplicates().tolist() == order


def test_sam_category_map_json_and_csv(tmp_path, results, gt):
    files = sam_folder(tmp_path / "sam", results, gt, IMAGES)
    names = {139: "dog", 74: "person", 164: "dog"}
    (tmp_path / "map.json").write_text(json.dumps({files[i].stem + ".jpg": names[i] for i in IMAGES}))
    (tmp_path / "map.csv").write_text("image,category\n" + "".join(f"{files[i].stem},{names[i]}\n" for i in IMAGES))
    assert read_category_map(tmp_path / "map.csv")[files[74].stem] == "person"
    ids = dict(zip(gt.categories["name"], gt.categories["id"]))
    for m in ("map.json", "map.csv"):
        masks, _ = read_predictions(tmp_path / "sam", gt, category_map=tmp_path / m)
        got = masks.groupby("image_id")["category_id"].unique()
        assert {i: list(v) for i, v in got.items()} == {i: [ids[names[i]]] for i in IMAGES}


def test_sam_without_ground_truth_names_its_classes(tmp_path, results, gt):
    sam_folder(tmp_path / "sam", results, gt, IMAGES, stems=["000000000139", "000000000074", "000000000164"])
    masks, cats = read_predictions(tmp_path / "sam", category="cat")
    assert sorted(set(masks["image_id"])) == sorted(IMAGES)  # COCO-style names are image ids
    assert cats.to_dict("records") == [{"id": 1, "name": "cat", "supercategory": ""}]
    sam_folder(tmp_path / "named", results, gt, IMAGES, stems=["zebra", "apple", "mango"])
    masks, _ = read_predictions(tmp_path / "named", category="cat")
    n = {i: sum(r["image_id"] == i for r in results) for i in IMAGES}
    # numbered in file-name order: apple (74) 1, mango (164) 2, zebra (139) 3
    assert masks["image_id"].value_counts().to_dict() == {1: n[74], 2: n[164], 3: n[139]}
    # through init: the run's categories carry the name
    assert main(["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "named"), "--category", "cat"]) == 0
    assert pd.read_parquet(tmp_path / "run" / "categories.parquet")["name"].tolist() == ["cat"]
    assert len(pd.read_parquet(tmp_path / "run" / "masks.parquet")) == sum(n.values())


def test_sam_replay_runs(tmp_path, results, gt, capsys):
    sam_folder(tmp_path / "sam", results, gt, IMAGES)
    assert main(["replay", "--predictions", str(tmp_path / "sam"), "--category", "person", "--gt", str(GT_JSON),
                 "--run-dir", str(tmp_path / "run"), "--crowd", "simulated", "--json"]) == 0
    out = capsys.readouterr().out
    rep = json.loads(out[out.index("{"):out.rindex("}") + 1])
    n = sum(r["image_id"] in IMAGES for r in results)
    assert rep["total"]["accepted"] + rep["total"]["rejected"] + rep["total"]["open"] == n


SAM_ERRORS = [
    ("missing stability_score", lambda r: r.pop("stability_score"), "field 'stability_score': missing"),
    ("score out of range", lambda r: r.update(stability_score=1.5), "field 'stability_score': expected a number in [0, 1]"),
    ("predicted_iou text", lambda r: r.update(predicted_iou="high"), "field 'predicted_iou': expected a number"),
    ("binary mask", lambda r: r.update(segmentation=[[0, 1], [1, 0]]), "field 'segmentation': expected an RLE object"),
    # found by the COCO loader, reported against the SAM file's record
    ("RLE size", lambda r: r.update(segmentation={"size": [5, 5], "counts": rle.encode(np.ones((5, 5), np.uint8))}),
     "field 'segmentation.size': RLE size 5x5 disagrees with image 139"),
    ("RLE counts", lambda r: r["segmentation"].update(counts="!!"), "field 'segmentation.counts'"),
]


@pytest.mark.parametrize("name, spoil, words", SAM_ERRORS, ids=[c[0] for c in SAM_ERRORS])
def test_sam_bad_record_is_one_line_naming_file_record_field(tmp_path, results, gt, capsys, name, spoil, words):
    files = sam_folder(tmp_path / "sam", results, gt, IMAGES)
    recs = json.loads(files[139].read_text())
    spoil(recs[2])
    files[139].write_text(json.dumps(recs))
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "sam"),
                                  "--category", "dog", "--gt", str(GT_JSON)])
    assert f"{files[139]}: record 2: {words}" in err
    assert not (tmp_path / "run").exists()


def test_sam_bad_setup_is_one_line(tmp_path, results, gt, capsys):
    files = sam_folder(tmp_path / "sam", results, gt, IMAGES)
    run = ["init", str(tmp_path / "run"), "--predictions", str(tmp_path / "sam"), "--gt", str(GT_JSON)]
    assert "--category NAME or --category-map FILE" in one_line_error(capsys, run)
    assert "command line: field '--category': class 'unicorn' is not in the ground truth" in \
        one_line_error(capsys, run + ["--category", "unicorn"])
    (tmp_path / "map.json").write_text(json.dumps({files[139].stem: "dog"}))
    assert f"map.json: field 'image': no class for image '{files[74].stem}'" in \
        one_line_error(capsys, run + ["--category-map", str(tmp_path / "map.json")])
    (tmp_path / "sam" / "odd.json").write_text("[]")
    assert "odd.json: field 'file name': no image named 'odd' in the ground truth" in \
        one_line_error(capsys, run + ["--category", "dog"])
    # one SAM file passed as COCO results: the error says what it looks like
    err = one_line_error(capsys, ["init", str(tmp_path / "run"), "--predictions", str(files[139])])
    assert f"{files[139]}: record 0: field 'image_id': missing: this looks like Segment Anything output" in err
    assert not (tmp_path / "run").exists()
