"""The detection stage end to end on real images with a random-weight checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torchvision = pytest.importorskip("torchvision")
import torch  # noqa: E402  (torchvision brings torch)
from PIL import Image  # noqa: E402

from crowdprop.cli import main  # noqa: E402
from crowdprop.detect import DetectorSpec, detect_images, load_or_create_projection  # noqa: E402
from crowdprop.detect.model import build_detector  # noqa: E402
from crowdprop.detect.projection import FEATURE_DIM  # noqa: E402
from crowdprop.errors import StateError  # noqa: E402
from crowdprop.masks import rle  # noqa: E402
from crowdprop.schema import MASK_COLUMNS  # noqa: E402

from .conftest import LISTING, RUN_OPTIONS, THREADS, make_model  # noqa: E402

pytestmark = pytest.mark.detect


def _tables(run_dir: Path):
    return (pd.read_parquet(run_dir / "masks.parquet"), np.load(run_dir / "features.npy"),
            pd.read_parquet(run_dir / "images.parquet"), pd.read_parquet(run_dir / "categories.parquet"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, images_dir, checkpoint, labels_json):
    """Run A: through the command line, with a COCO export."""
    d = tmp_path_factory.mktemp("run_a")
    coco = d / "export" / "results.json"
    rc = main(["-q", "detect", str(images_dir), str(d / "run"), "--weights", str(checkpoint),
               "--labels", str(labels_json), "--device", "cpu", "--batch-size", "2", "--images-per-part", "2",
               "--score-threshold", "0", "--min-size", "320", "--max-size", "320",
               "--detections-per-image", "4", "--threads", str(THREADS), "--export-coco", str(coco)])
    assert rc == 0
    return d / "run", coco


def test_tables_have_the_documented_shapes_and_values(cli_run, images_dir):
    run, _ = cli_run
    masks, feats, images, cats = _tables(run)
    assert list(masks.columns) == list(MASK_COLUMNS)
    for c, t in MASK_COLUMNS.items():
        if t != "object":
            assert masks[c].dtype == np.dtype(t), c
    n = len(masks)
    assert n > 0
    assert masks["mask_id"].tolist() == list(range(n))
    assert feats.shape == (n, FEATURE_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and np.abs(feats).sum(1).min() > 0
    # images: sorted relative paths (recursive, non-images ignored), sizes as stored in the files
    assert images["file_name"].tolist() == LISTING
    assert images["id"].tolist() == [0, 1, 2]
    assert images["coco_url"].tolist() == ["", "", ""]
    for r in images.itertuples():
        w, h = Image.open(images_dir / r.file_name).size
        assert (r.height, r.width) == (h, w)
    assert cats.to_dict("list") == {"id": [1, 2], "name": ["person", "car"], "supercategory": ["", ""]}
    # every image has detections (random weights, score threshold 0), at most 4
    counts = masks.groupby("image_id").size()
    assert counts.index.tolist() == [0, 1, 2] and counts.max() <= 4
    assert (np.diff(masks["image_id"]) >= 0).all()
    sizes = images.set_index("id")
    assert (masks["height"].to_numpy() == sizes.loc[masks["image_id"], "height"].to_numpy()).all()
    assert set(masks["category_id"]) <= {1, 2}
    assert ((masks["score"] > 0) & (masks["score"] <= 1)).all()
    assert ((masks["pred_iou"] > 0) & (masks["pred_iou"] <= 1)).all()
    assert masks["gt_iou"].isna().all() and (masks["gt_ann_id"] == -1).all()
    for r in masks.itertuples():
        m = rle.decode(r.rle, r.height, r.width)
        ys, xs = np.nonzero(m)
        assert r.area == m.sum() > 0
        assert (r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                                              ys.max() - ys.min() + 1)


def test_coco_export_matches_the_masks_table(cli_run):
    run, coco = cli_run
    masks = pd.read_parquet(run / "masks.parquet")
    recs = json.loads(coco.read_text())
    assert len(recs) == len(masks)
    for r, m in zip(recs, masks.itertuples()):
        assert set(r) == {"image_id", "category_id", "segmentation", "score", "bbox", "pred_iou"}
        assert (r["image_id"], r["category_id"]) == (m.image_id, m.category_id)
        assert r["segmentation"] == {"size": [m.height, m.width], "counts": m.rle}
        assert r["score"] == m.score and r["pred_iou"] == m.pred_iou
        # the detector's box, as torchvision widens it to paste the 28 x 28 mask (by 1/28 of
        # its size on each side, plus a pixel of rounding), contains the mask's box
        x, y, w, h = r["bbox"]
        sx, sy = w / 28 + 1, h / 28 + 1
        assert x - sx <= m.bbox_x and y - sy <= m.bbox_y
        assert x + w + sx >= m.bbox_x + m.bbox_w and y + h + sy >= m.bbox_y + m.bbox_h


def test_checkpoint_is_loaded_by_path(cli_run):
    # The checkpoint's class-2 bias makes class 2 the top detection of every image with a
    # score near e^4 / (e^4 + 2); a model without the checkpoint would not.
    masks = pd.read_parquet(cli_run[0] / "masks.parquet")
    top = masks.loc[masks.groupby("image_id")["score"].idxmax()]
    assert (top["category_id"] == 2).all()
    assert (top["score"] > 0.8).all()


def _reference(images_dir, checkpoint, names):
    """Plain torchvision (no crowdprop code) on the given images as one batch."""
    import torchvision.transforms.functional as F

    model = make_model()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    tensors = [F.to_tensor(Image.open(images_dir / n).convert("RGB")) for n in names]
    torch.set_num_threads(THREADS)
    with torch.inference_mode():
        return model, tensors, model(tensors)


def test_masks_scores_and_pred_iou_agree_with_plain_torchvision(cli_run, images_dir, checkpoint):
    masks = pd.read_parquet(cli_run[0] / "masks.parquet")
    _, _, out = _reference(images_dir, checkpoint, LISTING[:2])  # the first part's batch
    for image_id, o in enumerate(out):
        probs = o["masks"][:, 0].numpy().astype(np.float64)
        binar = probs > 0.5
        keep = binar.reshape(len(binar), -1).any(1)
        rows = masks[masks["image_id"] == image_id]
        assert len(rows) == keep.sum() > 0
        np.testing.assert_allclose(rows["score"], o["scores"].numpy()[keep], rtol=1e-6)
        assert rows["category_id"].tolist() == o["labels"].numpy()[keep].tolist()
        for r, p, b in zip(rows.itertuples(), probs[keep], binar[keep]):
            assert np.array_equal(rle.decode(r.rle, r.height, r.width), b.astype(np.uint8))  # RLE round trip
            soft_iou = (p * b).sum() / (b.sum() + (p * ~b).sum())
            assert r.pred_iou == pytest.approx(soft_iou, rel=1e-5)


def test_feature_is_the_masked_roi_feature_of_the_final_box(images_dir, checkpoint, spec, tmp_path):
    """Recompute the feature from torchvision's pieces on the final (not proposal) boxes."""
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import maskrcnn_inference
    from torchvision.models.detection.transform import resize_boxes

    proj = load_or_create_projection(tmp_path)
    image = np.asarray(Image.open(images_dir / LISTING[0]).convert("RGB"))
    torch.set_num_threads(THREADS)
    det = build_detector(spec, projection=proj, device="cpu")
    got = det([image])[0]
    model, tensors, out = _reference(images_dir, checkpoint, LISTING[:1])
    with torch.inference_mode():
        batch, _ = model.transform(tensors)
        feats = model.backbone(batch.tensors)
        boxes = resize_boxes(out[0]["boxes"], tensors[0].shape[-2:], batch.image_sizes[0])
        roi = model.roi_heads.box_roi_pool(feats, [boxes], batch.image_sizes)  # (n, 256, 7, 7)
        logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(
            model.roi_heads.mask_roi_pool(feats, [boxes], batch.image_sizes)))
        m28 = maskrcnn_inference(logits, [out[0]["labels"]])[0]  # (n, 1, 28, 28)
        x = (roi * F.adaptive_avg_pool2d(m28, 7)).flatten(1).numpy() @ proj
    keep = (out[0]["masks"][:, 0] > 0.5).flatten(1).any(1).numpy()
    assert roi.shape[1:] == (256, 7, 7) and x.shape[1] == 512
    assert got.features.shape == (keep.sum(), 512)
    scale = np.abs(x).max()
    np.testing.assert_allclose(got.features, x[keep], atol=1e-4 * scale, rtol=1e-3)
    det.close()


def test_two_runs_give_identical_tables_and_features(cli_run, images_dir, spec, tmp_path):
    detect_images(images_dir, tmp_path / "b", spec=spec, **RUN_OPTIONS)
    a, b = _tables(cli_run[0]), _tables(tmp_path / "b")
    pd.testing.assert_frame_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])
    assert np.array_equal(np.load(cli_run[0] / "projection.npy"), np.load(tmp_path / "b" / "projection.npy"))


def test_a_run_reuses_the_projection_stored_in_its_directory(cli_run, images_dir, spec, tmp_path):
    # Features are linear in the projection: a stored 2 * R must give exactly 2 * the features.
    r = np.load(cli_run[0] / "projection.npy")
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "projection.npy", 2 * r)
    detect_images(images_dir, tmp_path / "c", spec=spec, **RUN_OPTIONS)
    assert np.array_equal(np.load(tmp_path / "c" / "features.npy"), 2 * np.load(cli_run[0] / "features.npy"))


def test_resume_detects_only_images_not_done(cli_run, images_dir, spec, tmp_path, monkeypatch):
    from crowdprop.detect import model as model_mod

    seen: list[tuple[int, int]] = []
    call = model_mod.Detector.__call__

    def counting(self, images):
        seen.extend(im.shape[:2] for im in images)
        return call(self, images)

    monkeypatch.setattr(model_mod.Detector, "__call__", counting)
    run = tmp_path / "r"
    s1 = detect_images(images_dir, run, spec=spec, limit=2, **RUN_OPTIONS)
    assert (s1.n_images, s1.n_processed, s1.n_skipped) == (2, 2, 0)
    assert len(seen) == 2
    assert pd.read_parquet(run / "images.parquet")["file_name"].tolist() == LISTING[:2]
    # a killed run leaves a part without its images file: it is removed and redone
    (run / "detections" / "part-000000002.masks.parquet").write_bytes(b"half written")
    s2 = detect_images(images_dir, run, spec=spec, **RUN_OPTIONS)
    assert (s2.n_images, s2.n_processed, s2.n_skipped) == (3, 1, 2)
    h, w = np.asarray(Image.open(images_dir / LISTING[2])).shape[:2]
    assert seen[2:] == [(h, w)]
    s3 = detect_images(images_dir, run, spec=spec, **RUN_OPTIONS)
    assert (s3.n_processed, s3.n_skipped) == (0, 3) and len(seen) == 3
    a, b = _tables(cli_run[0]), _tables(run)
    pd.testing.assert_frame_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])


def test_resume_with_other_settings_is_refused(images_dir, spec, tmp_path):
    detect_images(images_dir, tmp_path / "r", spec=spec, limit=1, **RUN_OPTIONS)
    other = DetectorSpec(**{**spec.__dict__, "score_threshold": 0.5})
    with pytest.raises(StateError, match="score_threshold"):
        detect_images(images_dir, tmp_path / "r", spec=other, **RUN_OPTIONS)


def test_cli_reports_bad_label_map_in_one_line(images_dir, checkpoint, tmp_path, capsys):
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"1": "person", "two": "car"}))
    rc = main(["detect", str(images_dir), str(tmp_path / "run"), "--weights", str(checkpoint),
               "--labels", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"crowdprop detect: error: {bad}: field 'two': class index must be an integer"
    assert not (tmp_path / "run" / "masks.parquet").exists()
