"""Fixtures for the detection stage: real COCO images, a small random-weight checkpoint.

No internet and no pretrained weights: the checkpoint is a randomly initialised
``maskrcnn_resnet50_fpn_v2`` with 3 classes (background, person, car) whose
class-score bias favours class 2, saved with ``torch.save(model.state_dict())``.
torch is imported inside the fixtures, so this file loads without the extra.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import COCO128

IMAGES = ["000000000009.jpg", "000000000025.jpg", "000000000034.jpg"]
"""Three coco128 images; the last one goes into a subfolder (recursive listing)."""
LISTING = ["000000000009.jpg", "000000000025.jpg", "sub/000000000034.jpg"]
LABELS = {"1": "person", "2": "car"}
CLASS2_BIAS = 4.0
THREADS = 2


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    src = COCO128 / "images" / "train2017"
    if not src.is_dir():
        pytest.fail(f"coco128 images not found at {src}")
    d = tmp_path_factory.mktemp("images")
    (d / "sub").mkdir()
    for name, rel in zip(IMAGES, LISTING):
        shutil.copy(src / name, d / rel)
    (d / "notes.txt").write_text("not an image\n")
    return d


@pytest.fixture(scope="session")
def labels_json(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("labels") / "labels.json"
    p.write_text(json.dumps(LABELS))
    return p


def make_model(num_classes: int = 3, seed: int = 0):
    """A random-weight Mask R-CNN as torchvision builds it (320 px input, score threshold 0)."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes,
                                        min_size=320, max_size=320, box_score_thresh=0.0,
                                        box_detections_per_img=4).eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    model = make_model()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[2] += CLASS2_BIAS
    p = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(model.state_dict(), p)
    return p


@pytest.fixture(scope="session")
def spec(checkpoint, labels_json):
    from crowdprop.detect import DetectorSpec

    return DetectorSpec(model="maskrcnn_resnet50_fpn_v2", weights=str(checkpoint), labels=str(labels_json),
                        score_threshold=0.0, min_size=320, max_size=320, detections_per_image=4)


RUN_OPTIONS = dict(device="cpu", batch_size=2, images_per_part=2, num_threads=THREADS, progress=False)
