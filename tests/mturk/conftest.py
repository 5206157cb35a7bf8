"""Fixtures for the MTurk backend tests: real coco128 images and masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdprop.crowd.base import HitRequest, Question
from crowdprop.masks import rle
from crowdprop.schema import coerce_masks
from tests.conftest import COCO128, coco128_images

COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split()
CLASS_NAMES = {i + 1: n.replace("_", " ") for i, n in enumerate(COCO_NAMES)}


def coco128_masks(n_images: int = 4) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """masks.parquet-like rows and images.parquet-like rows for the first coco128 images."""
    from PIL import Image

    img_dir = COCO128 / "images" / "train2017"
    paths = coco128_images(n_images)
    rows, images = [], []
    for image_id, path in enumerate(paths, start=1):
        with Image.open(path) as im:
            w, h = im.size
        images.append({"id": image_id, "file_name": path.name, "height": h, "width": w})
        label = COCO128 / "labels" / "train2017" / (path.stem + ".txt")
        for line in label.read_text().splitlines():
            parts = line.split()
            if len(parts) < 7:
                continue
            xy = np.asarray(parts[1:], dtype=np.float64).reshape(-1, 2) * (w, h)
            counts = rle.from_polygons([xy.reshape(-1).tolist()], h, w)
            rows.append({"mask_id": 1000 + len(rows), "image_id": image_id, "category_id": int(parts[0]) + 1,
                         "score": 0.9, "height": h, "width": w, "rle": counts})
    df = pd.DataFrame(rows)
    df["area"] = rle.area(df["rle"].tolist(), df["height"].tolist(), df["width"].tolist())
    box = rle.bbox(df["rle"].tolist(), df["height"].tolist(), df["width"].tolist())
    df[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]] = box
    return coerce_masks(df), pd.DataFrame(images), img_dir


@pytest.fixture(scope="session")
def coco128():
    return coco128_masks()


def make_hit(masks: pd.DataFrame, *, n: int = 6, token: str = "tok-r0-b0", round: int = 0, batch: int = 0,
             assignments: int = 1, reward: float = 0.05, campaign: str = "test", start: int = 0) -> HitRequest:
    qs = tuple(Question(question_id=f"q{round}_{batch}_{i}", mask_row=(start + i) % len(masks)) for i in range(n))
    return HitRequest(token=token, round=round, batch=batch, questions=qs, assignments=assignments,
                      reward_usd=reward, campaign=campaign)
