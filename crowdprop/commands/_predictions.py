"""The ``--predictions`` options of ``init`` and ``replay`` (formats: :mod:`crowdprop.masks.formats`).

Not a command (the CLI skips modules whose name starts with ``_``).
"""
from __future__ import annotations

PREDICTIONS_HELP = ("COCO results JSON (also MMDetection's .segm.json, detectron2's coco_instances_results.json), "
                    "detectron2's instances_predictions.pth (needs torch), or Segment Anything's "
                    "amg.py --convert-to-rle output (a folder of <image>.json, with --category or --category-map)")


def add_predictions_args(p, *, required: bool, default: str | None = None) -> None:
    p.add_argument("--predictions", required=required, metavar="P",
                   help=PREDICTIONS_HELP + (f" (default: {default})" if default else ""))
    p.add_argument("--category", metavar="NAME",
                   help="Segment Anything masks: the class of every mask (a category name of --gt)")
    p.add_argument("--category-map", metavar="FILE",
                   help="Segment Anything masks: the class of each image's masks, as a JSON object "
                        "{\"image file name\": \"class\"} or a CSV with columns image,category")
