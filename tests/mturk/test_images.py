"""Overlay pictures: crop geometry, colors, deterministic files, local and S3 targets."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from crowdprop.errors import InputError
from crowdprop.hits import images as im
from crowdprop.masks import rle
from crowdprop.schema import coerce_masks


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.data())
def test_crop_contains_the_box_and_stays_inside_the_image(h, w, data):
    bx = data.draw(st.integers(0, w - 1))
    by = data.draw(st.integers(0, h - 1))
    bw = data.draw(st.integers(1, w - bx))
    bh = data.draw(st.integers(1, h - by))
    x0, y0, side = im.crop_box((bx, by, bw, bh), context=2.0, min_crop=128, shape=(h, w))
    assert side == min(max(int(np.ceil(2.0 * max(bw, bh))), 128), max(h, w))
    for lo, size, b0, blen in ((x0, w, bx, bw), (y0, h, by, bh)):
        if side <= size:
            assert 0 <= lo and lo + side <= size  # no padding along an axis where the square fits
            assert lo <= b0 and b0 + blen <= lo + side  # the whole box is visible
        else:
            assert lo <= 0 and lo + side >= size  # the whole image extent is visible


def _row(mask: np.ndarray, mask_id: int = 7, image_id: int = 1) -> pd.Series:
    h, w = mask.shape
    counts = rle.encode(mask)
    box = rle.bbox([counts], [h], [w])[0]
    df = pd.DataFrame([{"mask_id": mask_id, "image_id": image_id, "category_id": 1, "score": 1.0, "height": h,
                        "width": w, "rle": counts, "area": float(mask.sum()), "bbox_x": box[0], "bbox_y": box[1],
                        "bbox_w": box[2], "bbox_h": box[3]}])
    return coerce_masks(df).iloc[0]


def test_overlay_on_gray_blends_inside_and_keeps_outside():
    mask = np.zeros((200, 300), np.uint8)
    mask[50:150, 100:200] = 1  # a 100 x 100 square: the crop is 200 x 200 around it, upscaled to 256
    pic = im.overlay(mask, None, (100, 50, 100, 100), out_px=256, alpha=0.5, color=(255, 0, 0))
    assert pic.shape == (256, 256, 3) and pic.dtype == np.uint8
    centre = pic[128, 128]
    assert tuple(centre) == (round(0.5 * 128 + 0.5 * 255), 64, 64)
    assert tuple(pic[5, 5]) == (128, 128, 128)  # background, far from the mask
    # the outline is the pure color, right at the square's edge (x = 64 in the 256 px picture)
    assert tuple(pic[128, 65]) == (255, 0, 0)


def test_overlay_uses_the_image_pixels():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 2] = 200  # a blue image
    pic = im.overlay(mask, image, (20, 20, 20, 20), out_px=64, min_crop=64, alpha=0.5, color=(255, 0, 0))
    assert tuple(pic[2, 2]) == (0, 0, 200)
    assert tuple(pic[32, 32]) == (128, 0, 100)


def test_store_writes_deterministic_files_once(tmp_path):
    mask = np.zeros((100, 120), np.uint8)
    mask[10:60, 30:90] = 1
    row = _row(mask, mask_id=42)
    target = im.LocalFolderTarget(tmp_path / "a", "http://127.0.0.1:9/images/")
    store = im.OverlayStore(target)
    assert store.url(row) == "http://127.0.0.1:9/images/mask_42.jpg"
    first = (tmp_path / "a" / "mask_42.jpg").read_bytes()
    with Image.open(io.BytesIO(first)) as pic:
        assert pic.format == "JPEG" and pic.size == (256, 256)
    other = im.OverlayStore(im.LocalFolderTarget(tmp_path / "b", "http://x/")).render(row)
    assert other == first
    (tmp_path / "a" / "mask_42.jpg").write_bytes(b"kept")
    store.url(row)
    assert (tmp_path / "a" / "mask_42.jpg").read_bytes() == b"kept"  # existing files are reused


def test_store_reads_the_image_file_and_checks_its_size(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:25] = 1
    Image.fromarray(np.full((40, 50, 3), (0, 200, 0), np.uint8)).save(tmp_path / "img.png")
    images = pd.DataFrame({"id": [1], "file_name": ["img.png"]})
    store = im.OverlayStore(im.LocalFolderTarget(tmp_path / "out", "http://x"), images=images, image_root=tmp_path,
                            fmt="png", out_px=64)
    with Image.open(io.BytesIO(store.render(_row(mask)))) as pic:
        arr = np.asarray(pic.convert("RGB"))
    assert tuple(arr[50, 60]) == (0, 200, 0)  # outside the mask: the green image
    assert tuple(arr[1, 60]) == (128, 128, 128)  # the crop is taller than the image: gray padding
    Image.fromarray(np.zeros((41, 50, 3), np.uint8)).save(tmp_path / "img.png")
    im._read_image.cache_clear()
    with pytest.raises(InputError, match="image is 50x41 but its masks are 50x40"):
        store.render(_row(mask))


def test_missing_image_file_falls_back_to_gray(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:25] = 1
    images = pd.DataFrame({"id": [1], "file_name": ["nowhere.jpg"]})
    store = im.OverlayStore(im.LocalFolderTarget(tmp_path, "http://x"), images=images, image_root=tmp_path,
                            fmt="png", out_px=64)
    arr = np.asarray(Image.open(io.BytesIO(store.render(_row(mask)))).convert("RGB"))
    assert tuple(arr[63, 63]) == (128, 128, 128)


def test_s3_target_uploads_once_and_presigns_for_the_lifetime(monkeypatch):
    from botocore.stub import Stubber

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    client = im.s3_client(region="us-east-1")
    mask = np.zeros((30, 30), np.uint8)
    mask[5:15, 5:15] = 1
    row = _row(mask, mask_id=5)
    store = im.OverlayStore(im.S3Target(client, "my-bucket", "run1/", expires_s=3 * 86400))
    with Stubber(client) as stub:
        stub.add_response("put_object", {}, {"Bucket": "my-bucket", "Key": "run1/mask_5.jpg",
                                             "Body": store.render(row), "ContentType": "image/jpeg",
                                             "CacheControl": "max-age=259200"})
        url = store.url(row)
        assert store.url(row) == url  # no second put_object (the stubber would refuse it)
        stub.assert_no_pending_responses()
    assert url.startswith("https://my-bucket.s3.amazonaws.com/run1/mask_5.jpg?")
    assert "X-Amz-Expires=259200" in url and "X-Amz-Signature=" in url
