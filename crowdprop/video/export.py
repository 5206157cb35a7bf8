"""Export a video campaign's labels: one PNG per frame (8-bit grey, pixel = class id of
``labels.json``) and COCO semantic JSON (one annotation per frame and class present, its
pixels as COCO RLE; ``category_id`` is the class id of ``labels.json``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import atomic_path, atomic_write_text


def export(vr, out: str | Path | None = None) -> Path:
    from PIL import Image
    from pycocotools import mask as mask_utils

    out = Path(out) if out else vr.path / "export"
    labels = vr.pred_store()  # read a chunk at a time
    names = vr.campaign["frame_names"]
    (out / "labels").mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    anns: list[dict] = []
    classes = vr.classes
    for t in range(len(labels)):
        lab = labels[t]
        stem = Path(names[t]).stem
        fname = f"{t:05d}_{stem}.png" if stem != f"{t:05d}" else f"{stem}.png"
        with atomic_path(out / "labels" / fname) as tmp:
            Image.fromarray(lab).save(tmp, format="PNG")
        images.append({"id": t + 1, "file_name": names[t], "label_file": f"labels/{fname}",
                       "height": int(lab.shape[0]), "width": int(lab.shape[1])})
        for c in np.unique(lab):
            m = np.asfortranarray((lab == c).astype(np.uint8))
            rle = mask_utils.encode(m)
            anns.append({"id": len(anns) + 1, "image_id": t + 1, "category_id": int(c),
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                         "area": int(mask_utils.area(rle)), "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                         "iscrowd": 0})
    coco = {"info": {"description": "crowdprop video labels (human labels over the fine-tuned network's)"},
            "images": images, "annotations": anns,
            "categories": [{"id": i, "name": n, "supercategory": n} for i, n in enumerate(classes)]}
    atomic_write_text(out / "semantic.json", json.dumps(coco) + "\n")
    return out
