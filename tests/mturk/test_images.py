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
    im._read_reduced.cache_clear()
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


# ----------------------------------------------------------------------------- image files stay inside --images
def test_file_names_leaving_the_images_folder_are_refused_or_looked_up_inside(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    green, red = (0, 200, 0), (200, 0, 0)
    Image.fromarray(np.full((40, 50, 3), red, np.uint8)).save(outside / "img.png")  # must never be drawn
    Image.fromarray(np.full((40, 50, 3), green, np.uint8)).save(root / "img.png")
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:25] = 1

    def picture(file_name):
        images = pd.DataFrame({"id": [1], "file_name": [file_name], "height": [40], "width": [50]})
        store = im.OverlayStore(None, images=images, image_root=root, fmt="png", out_px=64, source="gt.json")
        im._read_reduced.cache_clear()
        return store.picture(_row(mask))

    for climbing in ("../secret/img.png", "sub/../../secret/img.png", "..", "sub/../.."):
        with pytest.raises(InputError) as e:
            picture(climbing)
        assert str(e.value).startswith("gt.json: image 1: field 'file_name': ") and "'..'" in str(e.value)
    # an absolute name is looked up inside the folder: its path there, then its base name
    assert tuple(picture(str(outside / "img.png"))[50, 60]) == green
    Image.fromarray(np.full((40, 50, 3), (0, 0, 200), np.uint8)).save(root / "sub" / "img.png")
    assert tuple(picture(str(root / "sub" / "img.png"))[50, 60]) == (0, 0, 200)  # an absolute path inside root
    assert tuple(picture("/sub/img.png")[50, 60]) == (0, 0, 200)
    assert tuple(picture("sub/./img.png")[50, 60]) == (0, 0, 200)
    assert im.image_candidates(root, "/etc/passwd") == [root / "etc/passwd", root / "passwd"]
    assert im.image_candidates(root, "../x.jpg") == [] and im.image_candidates(root, "") == []


def test_check_images_bounds_sizes_and_names_the_record():
    ok = pd.DataFrame({"id": [5, 6], "file_name": ["a.jpg", "/abs/b.jpg"], "height": [13_000, 480],
                       "width": [13_000, 640]})
    im.check_images(ok, "gt.json")  # 169 Mpx: under the limit
    big = ok.assign(height=[480, 60_000], width=[640, 60_000])
    with pytest.raises(InputError, match=r"^gt.json: images\[1\] \(id=6\): field 'height/width': image is "
                                         r"60,000 x 60,000 pixels; .* at most 178,956,970"):
        im.check_images(big, "gt.json")
    wide = ok.assign(height=[1, 1], width=[200_000_000, 5])  # few pixels in all, but no real image
    with pytest.raises(InputError, match="images\\[0\\] \\(id=5\\)"):
        im.check_images(wide, "gt.json")
    with pytest.raises(InputError, match=r"^p.json: image_id=6: field 'file_name': .*climbs out"):
        im.check_images(ok.assign(file_name=["a.jpg", "x/../../b.jpg"]), "p.json",
                        record=lambda i, iid: f"image_id={iid}")


# ----------------------------------------------------------------------------- nothing decoded whole
def test_mask_crop_samples_the_runs_like_a_nearest_resize_of_the_decoded_mask():
    rng = np.random.default_rng(4)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(5, 400, 2))
        mask = (rng.random((h, w)) > 0.6).astype(np.uint8)
        mask[: h // 3] = 0
        counts = rle.encode(mask)
        x0, y0 = (int(v) for v in rng.integers(-50, 60, 2))
        side, out_px = int(rng.integers(1, 500)), int(rng.integers(1, 300))
        pos = np.array([(2 * i + 1) * side // (2 * out_px)
                        for i in range(out_px)])  # the pixel under each output pixel's centre, exactly
        ys, xs = y0 + pos, x0 + pos
        padded = np.zeros((h + 2000, w + 2000), np.uint8)
        padded[1000:1000 + h, 1000:1000 + w] = mask  # outside the image: no mask
        expect = padded[np.ix_(ys + 1000, xs + 1000)].astype(bool)
        assert np.array_equal(im.mask_crop(counts, (h, w), x0, y0, side, out_px), expect)


def _big_jpeg(path, h: int, w: int) -> np.ndarray:
    """A smooth image with a white square, saved as JPEG; returns the pixels."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), 60)], -1).astype(np.uint8)
    img[h // 2: h // 2 + h // 10, w // 3: w // 3 + h // 10] = 255
    Image.fromarray(img).save(path, quality=92)
    return img


def test_big_jpeg_is_decoded_at_a_reduced_scale_and_the_picture_matches_a_full_decode(tmp_path):
    h, w = 3000, 4000
    img = _big_jpeg(tmp_path / "big.jpg", h, w)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2: h // 2 + h // 10, w // 3: w // 3 + h // 10] = 1  # the white square, 300 x 300
    row = _row(mask)
    images = pd.DataFrame({"id": [1], "file_name": ["big.jpg"], "height": [h], "width": [w]})
    for out_px, context, scale in ((256, 8.0, 8), (256, 2.0, 2), (104, 2.0, 4), (256, 1.0, 1)):
        im._read_reduced.cache_clear()
        store = im.OverlayStore(None, images=images, image_root=tmp_path, out_px=out_px, context=context)
        got = store.picture(row)
        x0, y0, side = im.crop_box((w // 3, h // 2, h // 10, h // 10), context=context, min_crop=128, shape=(h, w))
        assert im._scale_for(side, out_px) == scale
        info = im._read_reduced.cache_info()
        assert info.currsize == 1  # one decode, at that scale:
        decoded = im._read_reduced(str(tmp_path / "big.jpg"), scale, h, w)
        assert decoded.shape == (-(-h // scale), -(-w // scale), 3)
        full = im.overlay(mask, img, (w // 3, h // 2, h // 10, h // 10), out_px=out_px, context=context)
        diff = np.abs(got.astype(int) - full.astype(int))
        assert diff.mean() < 3.0 and np.percentile(diff, 99) < 40, (scale, diff.mean())


def test_an_image_file_of_another_size_is_refused_before_it_is_decoded(tmp_path):
    _big_jpeg(tmp_path / "a.jpg", 2000, 3000)
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:25] = 1
    images = pd.DataFrame({"id": [1], "file_name": ["a.jpg"], "height": [40], "width": [50]})
    store = im.OverlayStore(None, images=images, image_root=tmp_path, source="images.parquet")
    im._read_reduced.cache_clear()
    with pytest.raises(InputError, match=r"a.jpg: image 1: field 'height/width': image is 3000x2000 but its masks "
                                         r"are 50x40"):
        store.picture(_row(mask))
    (tmp_path / "a.jpg").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"a.jpg: image 1: field 'file_name': not a readable image"):
        store.picture(_row(mask))


# ----------------------------------------------------------------------------- S3: what a URL carries
def test_presigned_urls_carry_the_key_id_and_session_token_but_never_the_secret(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secretExample/0000000000000000000000000001")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEExampleSessionToken0001")
    url = im.S3Target(im.s3_client(region="us-east-1"), "my-bucket", "run1/", expires_s=3600).url("mask_5.jpg")
    assert "AKIAEXAMPLEKEYID0001" in url and "FwoGZXIvYXdzEExampleSessionToken0001" in url  # what README says
    assert "secretExample" not in url and "secretExample%2F" not in url


def test_public_s3_urls_carry_nothing_of_the_credentials_and_unguessable_names(monkeypatch):
    from botocore.stub import Stubber

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secretExample/0000000000000000000000000001")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEExampleSessionToken0001")
    key = bytes(range(32))
    client = im.s3_client(region="eu-west-1")
    target = im.S3Target(client, "my-bucket", "run1/pub/", expires_s=30 * 86400, public_key=key)
    mask = np.zeros((30, 30), np.uint8)
    mask[5:15, 5:15] = 1
    row = _row(mask, mask_id=5)
    store = im.OverlayStore(target)
    import hashlib
    import hmac

    digest = hmac.new(key, b"mask_5.jpg", hashlib.sha256).hexdigest()[:32]
    with Stubber(client) as stub:
        stub.add_response("put_object", {}, {"Bucket": "my-bucket", "Key": f"run1/pub/{digest}.jpg",
                                             "Body": store.render(row), "ContentType": "image/jpeg",
                                             "CacheControl": f"max-age={7 * 86400}"})
        url = store.url(row)
        stub.assert_no_pending_responses()
    assert url == f"https://my-bucket.s3.amazonaws.com/run1/pub/{digest}.jpg"
    for leak in ("AKIA", "X-Amz", "Signature", "Security-Token", "FwoG", "secret", "mask_5"):
        assert leak not in url
    other = im.S3Target(client, "my-bucket", "run1/pub/", expires_s=3600, public_key=bytes(32))
    assert other.key("mask_5.jpg") != target.key("mask_5.jpg")  # the name depends on the campaign's key
    assert target.key("mask_6.jpg") != target.key("mask_5.jpg")
    dotted = im.S3Target(client, "my.dotted.bucket", "p/", expires_s=3600, public_key=key)
    assert dotted.url("mask_5.jpg") == f"https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/p/{digest}.jpg"


def test_s3_public_option_is_checked(tmp_path):
    from crowdprop import config

    def section(table):
        return config.from_dict({"mturk": table}, "c.toml").mturk

    assert section({"s3_bucket": "my-bucket", "s3_public": True, "lifetime_s": 14 * 86400}).s3_public is True
    with pytest.raises(InputError, match="c.toml: \\[mturk\\]: field 's3_public': expected bool"):
        section({"s3_bucket": "my-bucket", "s3_public": "yes"})
    with pytest.raises(InputError, match="field 's3_public': applies to s3_bucket only"):
        section({"s3_public": True})
    with pytest.raises(InputError, match="field 'lifetime_s'"):
        section({"s3_bucket": "my-bucket", "lifetime_s": 14 * 86400})  # presigned: 7 days at most


def test_the_campaign_keeps_one_key_for_its_public_picture_names(tmp_path):
    import json

    from crowdprop.crowd.targets import image_url_key
    from crowdprop.campaign.store import RunDir

    (tmp_path / "campaign.json").write_text(json.dumps({"campaign_id": "c1", "crowd": {"kind": "mturk"}}))
    first = image_url_key(RunDir(tmp_path))
    stored = json.loads((tmp_path / "campaign.json").read_text())["image_url_key"]
    assert len(first) == 32 and stored == first.hex()
    assert image_url_key(RunDir(tmp_path)) == first  # a restarted run names its pictures the same
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "campaign.json").write_text(json.dumps({"campaign_id": "c2", "crowd": {"kind": "mturk"}}))
    assert image_url_key(RunDir(tmp_path / "other")) != first
