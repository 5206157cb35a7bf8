"""Masks out as a Label Studio import, for people to correct them there.

One task per image holding selected masks (by default the rejected and the open ones);
each mask is a pre-annotation (``predictions``) region of type ``brushlabels`` in Label
Studio's brush RLE (:mod:`crowdprop.masks.brush`), labelled with its class, so it opens
ready to be painted over or deleted. The region id is ``mask-<mask_id>``; the task's
``data`` also lists every region's mask id, final label and how it was decided.

A labeling config that matches (an ``Image`` named ``image`` and a ``BrushLabels`` named
``label`` with one ``Label`` per class) is written beside the tasks.
"""
from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from ..errors import StateError
from ..io import atomic_write_bytes, atomic_write_text
from ..masks import brush, rle
from .export import LABELS, SOURCES, final_labels
from .store import RunDir

FROM_NAME = "label"
TO_NAME = "image"
DEFAULT_STATUSES = ("rejected", "open")


def label_config(class_names: list[str]) -> str:
    """The Label Studio labeling config for the export's classes."""
    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n')


def config_path(path) -> Path:
    """Where the labeling config goes: beside the tasks, same name, ``.xml``."""
    return Path(path).with_suffix(".xml")


def _image_url(row: dict, prefix: str | None) -> str:
    name = str(row.get("file_name") or "")
    if prefix is not None:
        return prefix + name
    return str(row.get("coco_url") or "") or name


def export_labelstudio(run: RunDir, path, *, statuses=DEFAULT_STATUSES, image_url: str | None = None) -> int:
    """Write the Label Studio tasks to ``path`` (and the labeling config beside it).

    ``statuses``: final labels to include (names of :data:`LABELS`); ``image_url``: a prefix
    put before each image's ``file_name`` (e.g. ``/data/local-files/?d=photos/``); by default
    an image's ``coco_url``, else its ``file_name``. Returns the number of regions written."""
    final, source = final_labels(run)
    want = {c for c, name in LABELS.items() if name in statuses}
    keep = np.isin(final, list(want))
    masks = run.masks[keep]
    image_table, cats = run.table("images"), run.table("categories")
    if image_table is None or cats is None:
        raise StateError(f"{run.path}: incomplete run directory, images.parquet or categories.parquet is missing")
    images = {int(r["id"]): r for r in image_table.to_dict("records")}
    names = dict(zip(cats["id"].astype(int), cats["name"].astype(str)))
    model = f"crowdprop {run.campaign.get('campaign_id')}"
    tasks = []
    n = 0
    fin, src = final[keep], source[keep]
    order = np.argsort(masks["image_id"].to_numpy(), kind="stable")
    cols = {c: masks[c].to_numpy() for c in ("mask_id", "image_id", "category_id", "rle", "height", "width", "score")}
    bounds = np.flatnonzero(np.diff(cols["image_id"][order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        iid = int(cols["image_id"][group[0]])
        img = images.get(iid, {})
        results, listed = [], []
        for k in group:
            h, w = int(cols["height"][k]), int(cols["width"][k])
            mid = int(cols["mask_id"][k])
            results.append({
                "id": f"mask-{mid}", "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME,
                "original_width": w, "original_height": h, "image_rotation": 0,
                "value": {"format": "rle", "rle": brush.encode(rle.decode(str(cols["rle"][k]), h, w)),
                          "brushlabels": [names.get(int(cols["category_id"][k]), str(cols["category_id"][k]))]},
                "score": float(cols["score"][k]),
            })
            listed.append({"mask_id": mid, "crowdprop_label": LABELS[int(fin[k])],
                           "crowdprop_source": SOURCES[int(src[k])]})
        n += len(results)
        tasks.append({"data": {"image": _image_url(img, image_url), "crowdprop_image_id": iid,
                               "crowdprop_masks": listed},
                      "predictions": [{"model_version": model, "result": results}]})
    atomic_write_bytes(path, json.dumps(tasks).encode("utf-8"))
    used = sorted({names.get(int(c), str(c)) for c in cats["id"]})
    atomic_write_text(config_path(path), label_config(used))
    return n
