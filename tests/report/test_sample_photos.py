"""The shipped sample's photos on the worker pages and in report.html.

``crowdprop replay`` (and ``init``) record where the images are (``campaign.json``
``sources.images``: the folder ``images`` next to the sample's gt.json), so pictures of masks are
drawn on the photos, not on the gray canvas used when there are no image files.
"""
from __future__ import annotations

import base64
import io
import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.commands.replay import sample_images, sample_paths
from crowdprop.crowd.factory import local_endpoint_backend
from crowdprop.hits.images import GRAY, OverlayStore

CATEGORY = 44
"""A class of the sample with 19 predicted masks: one HIT."""


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def gray_share(px: np.ndarray) -> float:
    """Share of the picture's pixels on the gray canvas (every channel within 8 of 128)."""
    return float((np.abs(px - GRAY).max(axis=2) <= 8).mean())


class _Unused:
    def has(self, name):
        return False

    def put(self, name, data, content_type):
        raise AssertionError("not stored")

    def url(self, name):
        raise AssertionError("not stored")


def gray_fallback(run_path: Path, mask_id: int, out_px: int, min_crop: int = 128) -> np.ndarray:
    """The picture of mask ``mask_id`` as drawn without image files (the gray canvas)."""
    masks = pd.read_parquet(run_path / "masks.parquet")
    row = masks[masks["mask_id"] == mask_id].iloc[0]
    store = OverlayStore(_Unused(), images=pd.read_parquet(run_path / "images.parquet"), out_px=out_px,
                         min_crop=min_crop)
    return store.picture(row).astype(int)


def test_replay_records_the_sample_photos_and_the_report_gallery_shows_them(sample_run):
    campaign = json.loads((sample_run.path / "campaign.json").read_text())
    assert campaign["sources"]["images"] == str(Path(sample_images()).resolve())
    html = (sample_run.path / "report.html").read_text()
    assert "drawn on image files" in html
    # the gallery's thumbnails: JPEG data URIs, each with its mask id in the alt text
    thumbs = re.findall(r'<img alt="mask (\d+)" src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(thumbs) > 40
    pictures = [_decode(base64.b64decode(t)) for _, t in thumbs]
    shares = [gray_share(p) for p in pictures]
    # photos: hardly any pixel is the canvas gray, and they have color and texture
    assert np.median(shares) < 0.02 and np.quantile(shares, 0.9) < 0.1
    assert np.median([p.std() for p in pictures]) > 30
    assert np.median([np.abs(p[..., 0] - p[..., 2]).mean() for p in pictures]) > 10  # not grayscale
    # the same masks drawn without image files: mostly gray, and far from the thumbnails
    diffs = []
    for (mask_id, _), pic in list(zip(thumbs, pictures))[:12]:
        gray = gray_fallback(sample_run.path, int(mask_id), out_px=pic.shape[0], min_crop=64)
        assert gray_share(gray) > 0.3
        diffs.append(np.abs(pic - gray).mean())
    assert min(diffs) > 8 and np.median(diffs) > 25


def one_class_sample(folder: Path) -> tuple[Path, Path]:
    """The shipped sample cut to one class, in a folder without the photos next to it."""
    preds_path, gt_path, _ = sample_paths()
    preds = [p for p in json.loads(Path(preds_path).read_text()) if p["category_id"] == CATEGORY]
    gt = json.loads(Path(gt_path).read_text())
    images = {p["image_id"] for p in preds}
    gt["images"] = [im for im in gt["images"] if im["id"] in images]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in images]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preds.json").write_text(json.dumps(preds))
    (folder / "gt.json").write_text(json.dumps(gt))
    return folder / "preds.json", folder / "gt.json"


def test_hit_page_pictures_of_the_sample_are_photos_not_the_gray_fallback(tmp_path):
    preds, gt = one_class_sample(tmp_path / "in")
    toml = tmp_path / "c.toml"
    toml.write_text("[policy]\nk_pa = 0.0\n[crowd]\npoll_interval_s = 0.05\n")
    rd = init_run(tmp_path / "run", predictions=preds, gt=gt, config_path=toml, images_dir=sample_images(),
                  crowd={"kind": "mturk-local", "images": "render"})
    assert rd.campaign["sources"]["images"] == str(Path(sample_images()).resolve())
    crowd = local_endpoint_backend(rd)
    try:
        Campaign(rd, crowd, progress=False).run(max_rounds=1)
        hits = crowd.local.call("ListHITs", {"MaxResults": 10})["HITs"]
        assert hits
        page = crowd.local.hit_page(hits[0]["HITId"])
        pairs = re.findall(r'data-mask-id="(\d+)"[^>]*>\s*<legend>.*?</legend>\s*<img src="([^"]+)"', page, re.S)
        assert len(pairs) >= 5
        diffs = []
        for mask_id, url in pairs[:8]:
            assert url.startswith(crowd.handle.url + "/images/")
            with urllib.request.urlopen(url, timeout=10) as r:  # as the worker's browser fetches it
                served = _decode(r.read())
            gray = gray_fallback(rd.path, int(mask_id), out_px=served.shape[0])
            assert gray_share(gray) > 0.3 and gray_share(served) < 0.1
            diffs.append(np.abs(served - gray).mean())
        assert min(diffs) > 8 and np.median(diffs) > 25  # not the gray pictures
    finally:
        crowd.close()


def test_an_mturk_run_draws_its_pictures_on_the_photos_recorded_at_init(tmp_path, capsys):
    from crowdprop.campaign.store import RunDir
    from crowdprop.cli import main
    from crowdprop.mturk_local import LocalMTurk, serve, truth_from_masks
    from crowdprop.replay.workers import WorkerPool

    preds, gt = one_class_sample(tmp_path / "in")
    toml = tmp_path / "c.toml"
    toml.write_text("[policy]\nk_pa = 0.0\n[crowd]\npoll_interval_s = 0.05\n")
    run = tmp_path / "run"
    assert main(["init", str(run), "--predictions", str(preds), "--gt", str(gt), "--config", str(toml),
                 "--crowd", "mturk", "--images", sample_images()]) == 0
    assert f"masks are drawn on the photos in {Path(sample_images()).resolve()}" in capsys.readouterr().out
    rd = RunDir(run)
    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=run / "hit_images")
    with serve(local) as h:
        assert main(["run", str(run), "--endpoint-url", h.url, "--rounds", "1"]) == 0
    pictures = sorted((run / "hit_images").glob("mask_*.jpg"))
    assert len(pictures) >= 5
    shares = [gray_share(_decode(p.read_bytes())) for p in pictures]
    assert np.median(shares) < 0.02 and max(shares) < 0.3, shares
