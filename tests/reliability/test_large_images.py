"""Large photos: report --html (and HIT pictures, which draw the same way) never decode an
image or a mask whole; images beyond what can be drawn are refused at init.

The 60000 x 60000 case is refused at init (tests/reliability/test_bad_inputs.py, "gt image of
60000 x 60000 pixels"); here a 108-megapixel JPEG, under that bound, whose full decode as RGB
is 324 MB (and twice that with the array copy the old code made): the report is drawn over it
with about the memory of a report on a gray canvas.
"""
from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crowdprop.cli import main

H, W = 9000, 12000

MEASURE = """
import resource, sys
from crowdprop.cli import main
rc = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def _rect(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture(scope="module")
def big_campaign(tmp_path_factory):
    """A finished simulated campaign on one 12000 x 9000 JPEG: 6 objects, 3 predictions each."""
    tmp = tmp_path_factory.mktemp("big")
    (tmp / "images").mkdir()
    yy, xx = np.mgrid[0:H:8, 0:W:8]  # a smooth picture, drawn small and scaled up (cheap to make)
    small = np.stack([(xx * 255 // W), (yy * 255 // H), np.full(xx.shape, 40)], -1).astype(np.uint8)
    Image.fromarray(small).resize((W, H), Image.BILINEAR).save(tmp / "images" / "big.jpg", quality=85)
    rng = np.random.default_rng(0)
    anns, preds = [], []
    for i in range(6):
        x, y = 500 + (i % 4) * 2800, 600 + (i // 4) * 2800
        w, h = 400 + 60 * i, 300 + 50 * i
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1 + i % 2, "iscrowd": 0,
                     "segmentation": _rect(x, y, w, h), "area": float(w * h), "bbox": [x, y, w, h]})
        for j, shift in enumerate((0, 30, 700)):  # right, nearly right, wrong
            preds.append({"image_id": 1, "category_id": 1 + i % 2, "score": float(rng.uniform(0.3, 0.99)),
                          "segmentation": _rect(x + shift, y, w, h)})
    gt = {"images": [{"id": 1, "file_name": "big.jpg", "height": H, "width": W}],
          "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "slab"}], "annotations": anns}
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "preds.json").write_text(json.dumps(preds))
    (tmp / "c.toml").write_text("[policy]\nk_pa = 0.0\nk = 3\nbatch = 3\nmin_cluster_size = 2\n"
                                "[crowd]\nquestions_per_hit = 10\ngolds_per_hit = 2\n")
    run = tmp / "run"
    assert main(["init", str(run), "--predictions", str(tmp / "preds.json"), "--gt", str(tmp / "gt.json"),
                 "--config", str(tmp / "c.toml"), "--crowd", "simulated"]) == 0
    assert main(["run", str(run)]) == 0
    return tmp


def _report_peak_kb(run: Path, *extra: str) -> int:
    out = subprocess.run([sys.executable, "-c", MEASURE, "report", str(run), "--html", *extra],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(re.search(r"MAXRSS_KB (\d+)", out.stdout).group(1))


def test_report_html_draws_a_108_megapixel_photo_without_decoding_it_whole(big_campaign):
    run = big_campaign / "run"
    gray_kb = _report_peak_kb(run)
    photo_kb = _report_peak_kb(run, "--images", str(big_campaign / "images"))
    page = (run / "report.html").read_text()
    assert "image files" in page  # the gallery was drawn over the photo...
    thumbs = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert thumbs
    colors = [np.asarray(Image.open(io.BytesIO(base64.b64decode(t))).convert("RGB"), dtype=float) for t in thumbs]
    assert max(abs(c[..., 0].mean() - c[..., 1].mean()) for c in colors) > 20  # (not a gray canvas)
    full_decode_kb = H * W * 3 // 1024  # one RGB copy of the photo: 316,406 KiB
    assert photo_kb - gray_kb < full_decode_kb // 3, (gray_kb, photo_kb)  # ...with a few MB more than gray
