"""The detection stage: images -> masks, scores, quality estimates, clustering features.

torchvision Mask R-CNN inference (:mod:`.model`), streamed over a folder of
images with resumable Parquet parts (:mod:`.pipeline`, :mod:`.store`), locally or
over Ray Data (:mod:`.ray_engine`). This package is the only place that imports
torch, torchvision and ray, and it does so inside functions: importing it needs
neither.

Main entry point::

    from crowdprop.detect import DetectorSpec, detect_images
    detect_images("images/", "run/", spec=DetectorSpec(weights="model.pt", labels="labels.json"))

Glossary
--------
part
    The results of one shard of images in ``RUN_DIR/detections/``
    (see :mod:`.store`); complete parts make a run resumable.
pred_iou
    Soft IoU of the mask probabilities with the binarized mask (see :mod:`.model`).
feature
    512-d masked ROI feature: ``256 x 7 x 7`` ROI features of the final box times
    the mask probabilities pooled to ``7 x 7``, projected by the run's fixed
    Gaussian matrix (:mod:`.projection`).
"""
from .images import list_images, read_image
from .labels import LabelMap, load_label_map
from .model import MODELS, DetectorSpec, Detections
from .pipeline import DetectSummary, detect_images
from .projection import FEATURE_DIM, load_or_create_projection, make_projection
from .store import merge_parts

__all__ = ["DetectSummary", "DetectorSpec", "Detections", "FEATURE_DIM", "LabelMap", "MODELS", "detect_images",
           "list_images", "load_label_map", "load_or_create_projection", "make_projection", "merge_parts",
           "read_image"]
