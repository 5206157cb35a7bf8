"""Parts and the merge, with hand-made detections (no model, no torch needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowdprop.detect.model import Detections  # importable without torch
from crowdprop.detect.store import clean_incomplete_parts, done_images, merge_parts, write_part
from crowdprop.errors import StateError
from crowdprop.masks import rle

CATS = pd.DataFrame({"id": [1, 2], "name": ["a", "b"], "supercategory": ["", ""]})


def _det(n: int, tag: float, h: int = 6, w: int = 8) -> Detections:
    """n square masks; feature rows filled with ``tag + k`` so rows can be traced."""
    masks = []
    for k in range(n):
        m = np.zeros((h, w), np.uint8)
        m[k:k + 2, k:k + 3] = 1
        masks.append(m)
    return Detections(
        height=h, width=w,
        boxes=np.array([[k, k, k + 3, k + 2] for k in range(n)], np.float64).reshape(n, 4),
        labels=np.array([1 + k % 2 for k in range(n)], np.int64),
        scores=np.linspace(0.9, 0.5, n), pred_iou=np.full(n, 0.75),
        rle=[rle.encode(m) for m in masks],
        features=np.full((n, 512), tag, np.float32) + np.arange(n, dtype=np.float32)[:, None],
    )


def test_merge_orders_by_image_and_keeps_features_aligned(tmp_path):
    parts = tmp_path / "detections"
    # written out of order, one image without detections
    write_part(parts, 2, ["c.jpg", "d.jpg"], [_det(1, 30.0), _det(0, 40.0)])
    write_part(parts, 0, ["a.jpg", "b.jpg"], [_det(2, 10.0), _det(3, 20.0)])
    s = merge_parts(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], CATS, export_coco=tmp_path / "r.json")
    assert (s.n_images, s.n_masks) == (4, 6)
    m = pd.read_parquet(tmp_path / "masks.parquet")
    f = np.load(tmp_path / "features.npy")
    assert m["mask_id"].tolist() == list(range(6))
    assert m["image_id"].tolist() == [0, 0, 1, 1, 1, 2]
    assert f[:, 0].tolist() == [10, 11, 20, 21, 22, 30]
    assert m["score"].tolist() == pytest.approx([0.9, 0.5, 0.9, 0.7, 0.5, 0.9])
    assert m["area"].tolist() == [6.0] * 6
    assert m[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].iloc[4].tolist() == [2, 2, 3, 2]
    assert pd.read_parquet(tmp_path / "images.parquet")["file_name"].tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_merge_keeps_only_the_listing_and_renumbers(tmp_path):
    parts = tmp_path / "detections"
    write_part(parts, 0, ["a.jpg", "b.jpg"], [_det(2, 10.0), _det(1, 20.0)])
    write_part(parts, 2, ["c.jpg"], [_det(2, 30.0)])
    # b.jpg was removed from the folder: its rows go, ids are given by the current listing
    s = merge_parts(tmp_path, ["a.jpg", "c.jpg"], CATS)
    m = pd.read_parquet(tmp_path / "masks.parquet")
    assert s.n_masks == 4 and m["image_id"].tolist() == [0, 0, 1, 1]
    assert np.load(tmp_path / "features.npy")[:, 0].tolist() == [10, 11, 30, 31]
    with pytest.raises(StateError, match="1 image\\(s\\) not detected yet, e.g. 'z.jpg'"):
        merge_parts(tmp_path, ["a.jpg", "z.jpg"], CATS)


def test_interleaved_parts_are_merged_in_image_order(tmp_path):
    parts = tmp_path / "detections"
    write_part(parts, 0, ["a.jpg", "c.jpg"], [_det(1, 10.0), _det(1, 30.0)])
    write_part(parts, 1, ["b.jpg"], [_det(1, 20.0)])
    merge_parts(tmp_path, ["a.jpg", "b.jpg", "c.jpg"], CATS)
    assert np.load(tmp_path / "features.npy")[:, 0].tolist() == [10, 20, 30]
    assert pd.read_parquet(tmp_path / "masks.parquet")["image_id"].tolist() == [0, 1, 2]


def test_no_detections_give_empty_tables(tmp_path):
    write_part(tmp_path / "detections", 0, ["a.jpg"], [_det(0, 0.0)])
    s = merge_parts(tmp_path, ["a.jpg"], CATS)
    assert s.n_masks == 0
    assert np.load(tmp_path / "features.npy").shape == (0, 512)
    assert len(pd.read_parquet(tmp_path / "masks.parquet")) == 0


def test_incomplete_parts_are_cleaned_and_not_done(tmp_path):
    parts = tmp_path / "detections"
    write_part(parts, 0, ["a.jpg"], [_det(1, 0.0)])
    write_part(parts, 1, ["b.jpg"], [_det(1, 0.0)])
    (parts / "part-000000001.images.parquet").unlink()  # killed before the part was complete
    (parts / ".masks.parquet.x.tmp").write_bytes(b"")
    assert done_images(parts) == {"a.jpg"}
    assert clean_incomplete_parts(parts) == 3
    assert sorted(p.name for p in parts.iterdir()) == [
        "part-000000000.features.npy", "part-000000000.images.parquet", "part-000000000.masks.parquet"]
