"""Run directories for the report tests: the shipped sample replayed, and a small
campaign on coco128's real images (COCO ground truth and jittered predictions made
from its YOLO polygons)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crowdprop.crowd.factory import simulated_backend
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.masks import rle
from tests.conftest import COCO128, coco128_images

NASTY = "<script>alert(1)</script> & \"people\" $x$"
"""A class name holding HTML: the page must show it as text."""


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> RunDir:
    """The shipped sample replayed to the end (simulated crowd), with report.json and report.html."""
    run_dir = tmp_path_factory.mktemp("sample") / "run"
    assert main(["replay", "--run-dir", str(run_dir), "--crowd", "simulated"]) == 0
    assert main(["report", str(run_dir), "--html"]) == 0
    return RunDir(run_dir)


def coco128_inputs(folder: Path, n_images: int = 16, seed: int = 0) -> tuple[Path, Path, Path]:
    """COCO GT (polygons) and predictions (each GT instance, half of them shifted) for
    the first ``n_images`` coco128 images; class 1 is renamed to :data:`NASTY`."""
    from PIL import Image

    img_dir = COCO128 / "images" / "train2017"
    paths = coco128_images(n_images)
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for image_id, path in enumerate(paths, start=1):
        with Image.open(path) as im:
            w, h = im.size
        images.append({"id": image_id, "file_name": path.name, "height": h, "width": w,
                       "coco_url": f"http://images.cocodataset.org/train2017/{path.name}"})
        for line in (COCO128 / "labels" / "train2017" / (path.stem + ".txt")).read_text().splitlines():
            parts = line.split()
            if len(parts) < 7:
                continue
            xy = np.asarray(parts[1:], dtype=np.float64).reshape(-1, 2) * (w, h)
            cat = int(parts[0]) + 1
            x0, y0 = xy.min(0)
            bw, bh = xy.max(0) - xy.min(0)
            if bw < 4 or bh < 4:
                continue
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                         "segmentation": [xy.reshape(-1).round(2).tolist()], "area": float(bw * bh),
                         "bbox": [float(x0), float(y0), float(bw), float(bh)]})
            if rng.random() < 0.5:  # a poor prediction: shifted by 40 % of its box
                xy = xy + np.array([0.4 * bw, 0.2 * bh]) * rng.choice([-1, 1], 2)
            xy[:, 0] = xy[:, 0].clip(0, w - 1)
            xy[:, 1] = xy[:, 1].clip(0, h - 1)
            counts = rle.from_polygons([xy.reshape(-1).tolist()], h, w)
            preds.append({"image_id": image_id, "category_id": cat, "score": float(rng.uniform(0.3, 1.0)),
                          "segmentation": {"size": [h, w], "counts": counts}})
    from tests.mturk.conftest import COCO_NAMES

    cats = [{"id": i + 1, "name": n.replace("_", " "), "supercategory": ""} for i, n in enumerate(COCO_NAMES)]
    cats[0]["name"] = NASTY
    folder.mkdir(parents=True, exist_ok=True)
    gt, pr, cfg = folder / "gt.json", folder / "preds.json", folder / "campaign.toml"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    pr.write_text(json.dumps(preds))
    cfg.write_text("[policy]\nk_pa = 0.0\n")
    return gt, pr, img_dir


@pytest.fixture(scope="session")
def coco128_run(tmp_path_factory) -> tuple[RunDir, Path]:
    """A finished campaign on coco128 images (simulated crowd); returns (run, image folder)."""
    base = tmp_path_factory.mktemp("coco128")
    gt, pr, img_dir = coco128_inputs(base / "inputs")
    rd = init_run(base / "run", predictions=pr, gt=gt, config_path=base / "inputs" / "campaign.toml",
                  crowd={"kind": "simulated"})
    Campaign(rd, simulated_backend(rd), progress=False).run()
    return RunDir(rd.path), img_dir


@pytest.fixture
def copy_run(tmp_path):
    """Copy a run directory into tmp_path (tests that write reports of their own)."""
    def _copy(run: RunDir, name: str = "copy") -> RunDir:
        dst = tmp_path / name
        shutil.copytree(run.path, dst)
        return RunDir(dst)
    return _copy
