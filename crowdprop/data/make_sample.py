"""Make the shipped sample (crowdprop/data/sample/) from Ultralytics' coco128-seg bundle.

    python -m crowdprop.data.make_sample BUNDLE_DIR [--out crowdprop/data/sample] [--images 48] [--seed 14]

BUNDLE_DIR holds ``images/train2017/*.jpg`` and ``labels/train2017/*.txt`` (YOLO polygons,
normalized). Writes:

- ``images/<file>.jpg``: the images with the most instances, copied unchanged;
- ``gt.json``: COCO instances ground truth (polygons in pixels, COCO category ids);
- ``predictions.json``: COCO results (compressed RLE, ``score``) made from the ground truth
  with a seeded generator: per instance 1 to 3 overlapping predictions, each of drawn quality (good: slight vertex
  jitter; fair: a shift and a rescale; poor: a large shift, a half-size or an oversized
  outline), plus false positives (an outline moved elsewhere). The score is
  0.15 + 0.8 x IoU plus noise, so it tracks quality without settling it.

Only used to (re)make the sample; nothing reads the bundle at run time.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from crowdprop.masks import rle

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
         "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
         "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
         "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
         "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
         "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
         "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
         "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
         "teddy bear", "hair drier", "toothbrush"]
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
MIN_AREA = 300.0
"""Instances smaller than this (pixels) are left out of the sample: too small to judge on a HIT page."""


def _read_labels(path: Path, w: int, h: int) -> list[tuple[int, np.ndarray]]:
    out = []
    for line in path.read_text().splitlines():
        v = line.split()
        if len(v) < 7:
            continue
        xy = np.asarray(v[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
        out.append((int(v[0]), xy))
    return out


def _poly_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _flat(xy: np.ndarray, w: int, h: int) -> list[float]:
    xy = np.clip(xy, 0, [w - 1, h - 1])
    return [round(float(v), 2) for v in xy.ravel()]


def _perturb(xy: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    c = xy.mean(axis=0)
    size = np.ptp(xy, axis=0).clip(4, None)
    if kind == "good":
        return xy + rng.normal(0, 0.02, xy.shape) * size
    if kind == "fair":
        shift = rng.normal(0, 0.12, 2) * size
        scale = rng.uniform(0.8, 1.2)
        return c + (xy - c) * scale + shift + rng.normal(0, 0.04, xy.shape) * size
    how = rng.integers(3)
    if how == 0:  # well off target
        return xy + rng.choice([-1, 1], 2) * rng.uniform(0.45, 0.8, 2) * size
    if how == 1:  # a part of it
        return c + (xy - c) * rng.uniform(0.4, 0.55) + rng.normal(0, 0.15, 2) * size
    return c + (xy - c) * rng.uniform(1.6, 2.0)  # spills far over


def make(bundle: Path, out: Path, n_images: int, seed: int) -> dict:
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = sorted((bundle / "labels" / "train2017").glob("*.txt"))
    found = [(p, bundle / "images" / "train2017" / f"{p.stem}.jpg") for p in labels]
    found = [(p, j) for p, j in found if j.is_file()]
    found.sort(key=lambda pj: (-len(pj[0].read_text().splitlines()), pj[0].stem))
    chosen = sorted(found[:n_images], key=lambda pj: pj[0].stem)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    anns: list[dict] = []
    preds: list[dict] = []
    for lab, jpg in chosen:
        image_id = int(lab.stem)
        with Image.open(jpg) as im:
            w, h = im.size
        shutil.copyfile(jpg, out / "images" / jpg.name)
        images.append({"id": image_id, "file_name": jpg.name, "width": w, "height": h,
                       "coco_url": f"http://images.cocodataset.org/train2017/{jpg.name}"})
        inst = [(k, xy) for k, xy in _read_labels(lab, w, h) if _poly_area(xy) >= MIN_AREA]
        gt_counts = []
        for k, xy in inst:
            poly = _flat(xy, w, h)
            x0, y0 = xy.min(axis=0).clip(0)
            x1, y1 = np.minimum(xy.max(axis=0), [w, h])
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": COCO_IDS[k], "iscrowd": 0,
                         "segmentation": [poly], "area": round(_poly_area(xy), 2),
                         "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]})
            gt_counts.append(rle.from_polygons([poly], h, w))
        made = []
        for k, xy in inst:  # a detector's overlapping candidates: 1 to 3 per instance
            for _ in range(1 + rng.binomial(2, 0.5)):
                kind = rng.choice(["good", "fair", "poor"], p=[0.6, 0.1, 0.3])
                made.append((k, _perturb(xy, kind, rng)))
        for _ in range(rng.binomial(len(inst), 0.12)):  # false positives: an outline moved elsewhere
            k, xy = inst[rng.integers(len(inst))]
            size = np.ptp(xy, axis=0)
            at = rng.uniform([0, 0], np.maximum([w, h] - size, 1))
            made.append((k, xy - xy.min(axis=0) + at))
        for k, xy in made:
            poly = _flat(xy, w, h)
            if _poly_area(np.asarray(poly).reshape(-1, 2)) < 50:
                continue
            counts = rle.from_polygons([poly], h, w)
            same = [c for (kk, _), c in zip(inst, gt_counts) if kk == k]
            iou = float(rle.iou_matrix([counts], same, h, w).max()) if same else 0.0
            score = float(np.clip(0.15 + 0.8 * iou + rng.normal(0, 0.06), 0.02, 0.99))
            preds.append({"image_id": image_id, "category_id": COCO_IDS[k], "score": round(score, 3),
                          "segmentation": {"size": [h, w], "counts": counts}})
    used: list[int] = sorted({int(a["category_id"]) for a in anns} | {int(p["category_id"]) for p in preds})
    cats = [{"id": i, "name": NAMES[COCO_IDS.index(i)]} for i in used]
    gt = {"info": {"description": "crowdprop sample: coco128-seg images with instances of at least "
                                  f"{MIN_AREA:.0f} px (see README.md)"},
          "images": images, "annotations": anns, "categories": cats}
    (out / "gt.json").write_text(json.dumps(gt, separators=(",", ":")))
    (out / "predictions.json").write_text(json.dumps(preds, separators=(",", ":")))
    return {"images": len(images), "annotations": len(anns), "predictions": len(preds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="coco128-seg folder (images/train2017, labels/train2017)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "sample")
    ap.add_argument("--images", type=int, default=48, help="how many images (those with the most instances)")
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args(argv)
    print(make(a.bundle, a.out, a.images, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
