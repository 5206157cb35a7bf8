"""COCO masks in and out. See :mod:`crowdprop.masks.rle` for the RLE glossary."""
from . import rle
from .coco import GroundTruth, load_ground_truth, load_predictions, match_ground_truth, write_instances

__all__ = ["rle", "GroundTruth", "load_ground_truth", "load_predictions", "match_ground_truth", "write_instances"]
