"""torchvision Mask R-CNN with the outputs crowdprop needs, in one forward pass.

For every detection whose class score is above the threshold the
:class:`Detector` returns:

box, class, score
    As torchvision's ``MaskRCNN`` returns them (boxes in input-image pixels).
mask
    torchvision's pasted mask probabilities binarized at ``p > 0.5``, encoded
    with :func:`crowdprop.masks.rle.encode`. Detections whose binarized mask is
    empty are dropped (a crowd worker cannot judge an empty mask).
pred_iou
    A mask-quality estimate without a trained quality head: the soft IoU
    (Jaccard index) between the mask probability map ``p`` and its binarization
    ``b = p > 0.5``::

        pred_iou = sum(p * b) / (sum(b) + sum(p * (1 - b)))

    It is in ``(0, 1]``: 1 when every pixel is confidently in or out, lower when
    pixels inside the mask are uncertain (``p`` near 0.5) and when probability
    mass lies outside it (a blurry or fragmented prediction). It replaces the
    "mean probability inside the mask", which ignores the mass outside.
feature
    The paper's best clustering feature: ROI features with mask attention. In
    eval mode torchvision's ROI heads pool ``box_roi_pool`` on the *proposals*,
    then predict the final boxes, then run ``mask_roi_pool`` (14 x 14) on those
    final boxes. A forward hook on ``mask_roi_pool`` runs ``box_roi_pool`` (FPN
    level chosen per box, RoIAlign 7 x 7, sampling ratio 2) on the same final
    boxes with the same FPN features, which gives the ``256 x 7 x 7`` ROI feature
    map of each final detection; a forward hook on ``roi_heads`` keeps the
    ``28 x 28`` box-frame mask probabilities of the predicted class before they
    are pasted into the image. The mask probabilities are average-pooled to
    ``7 x 7`` (soft attention, not binarized), multiplied into every channel,
    flattened (12544 values) and projected to 512 values with the run's fixed
    Gaussian matrix (:mod:`crowdprop.detect.projection`). Nothing runs twice:
    the extra cost is one RoIAlign over the final boxes and one matrix product.

Weights are torchvision's COCO weights (``"DEFAULT"``, downloaded by torchvision
into its cache the first time), a checkpoint file saved with
``torch.save(model.state_dict())`` together with a label map, or ``None``: a
randomly initialised model drawn from ``init_seed`` (tests and benchmarks).

This module imports torch and torchvision; nothing outside
:mod:`crowdprop.detect` and :mod:`crowdprop.commands.detect` does.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..masks import rle as _rle
from .labels import LabelMap, label_map_from_names, load_label_map
from .projection import FEATURE_DIM, ROI_DIM, ROI_SIZE

log = logging.getLogger(__name__)

__all__ = ["MODELS", "DetectorSpec", "Detections", "Detector", "resolve_label_map", "resolve_device",
           "build_detector", "torch_threads", "default_threads"]

MODELS: dict[str, str] = {
    "maskrcnn_resnet50_fpn_v2": "MaskRCNN_ResNet50_FPN_V2_Weights",
    "maskrcnn_resnet50_fpn": "MaskRCNN_ResNet50_FPN_Weights",
}
"""Supported torchvision builders and their weights enums."""

MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to build the same detector again (in another process too).

    Attributes
    ----------
    model : str
        A key of :data:`MODELS`.
    weights : str or None
        ``"DEFAULT"`` (torchvision's COCO weights), a checkpoint path, or ``None``
        (random initialisation from ``init_seed``).
    labels : str or None
        Label map JSON (required with a checkpoint path unless ``num_classes``).
    num_classes : int or None
        Class count, background included, when there is no label map (classes are
        then named ``class_1`` ...).
    score_threshold : float
        Detections with a class score above this are kept.
    min_size, max_size : int
        torchvision's resize: shorter side to ``min_size``, longer side at most ``max_size``.
    detections_per_image : int
    init_seed : int
        Seed of the random initialisation when ``weights`` is ``None``.
    """

    model: str = "maskrcnn_resnet50_fpn_v2"
    weights: str | None = "DEFAULT"
    labels: str | None = None
    num_classes: int | None = None
    score_threshold: float = 0.05
    min_size: int = 800
    max_size: int = 1333
    detections_per_image: int = 100
    init_seed: int = 0

    def settings(self) -> dict:
        """The settings that change the detections (stored in ``RUN_DIR/detect.json``)."""
        d = asdict(self)
        if self.weights not in (None, "DEFAULT"):
            p = Path(self.weights)
            d["weights"] = str(p.resolve())
            d["weights_bytes"] = p.stat().st_size if p.exists() else None
        if self.labels is not None:
            d["labels"] = str(Path(self.labels).resolve())
        return d


@dataclass
class Detections:
    """The detections of one image (``n`` of them).

    Attributes
    ----------
    height, width : int
    boxes : numpy.ndarray, shape (n, 4), float64
        ``[x1, y1, x2, y2]`` in pixels.
    labels : numpy.ndarray, shape (n,), int64
        Class index = category id.
    scores : numpy.ndarray, shape (n,), float64
    pred_iou : numpy.ndarray, shape (n,), float64
        Soft IoU of the mask probabilities with the binarized mask, in (0, 1].
    rle : list of str, length n
        Compressed COCO RLE counts of the binarized masks (size ``[height, width]``).
    features : numpy.ndarray, shape (n, 512), float32
    """

    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    pred_iou: np.ndarray
    rle: list[str] = field(default_factory=list)
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, FEATURE_DIM), np.float32))

    def __len__(self) -> int:
        return len(self.rle)


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; checks ``"cuda"`` is there."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device", None, None, f"{device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError("--device", None, None, f"{device!r}: expected auto, cpu or cuda[:N]")
    return device


def default_threads() -> int:
    """CPU threads for torch: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Set ``torch.set_num_threads(n)`` inside the block and restore it after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n or default_threads()))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_label_map(spec: DetectorSpec) -> LabelMap:
    """The label map a spec implies (validated; nothing is built or downloaded)."""
    if spec.model not in MODELS:
        raise InputError("--model", None, None, f"unknown model {spec.model!r}; one of {sorted(MODELS)}")
    if spec.weights == "DEFAULT":
        if spec.labels is not None:
            raise InputError(spec.labels, None, None,
                             "a label map goes with a checkpoint PATH; DEFAULT weights come with COCO's categories")
        from torchvision.models import detection

        enum = getattr(detection, MODELS[spec.model])
        return label_map_from_names(enum.DEFAULT.meta["categories"], source=f"{spec.model} DEFAULT weights")
    if spec.labels is not None:
        return load_label_map(spec.labels)
    if spec.num_classes is not None:
        if spec.num_classes < 2:
            raise InputError("num_classes", None, None, "needs at least 2 (background + one class)")
        return LabelMap({i: f"class_{i}" for i in range(1, spec.num_classes)}, spec.num_classes, "num_classes")
    where = spec.weights if spec.weights is not None else "--weights"
    raise InputError(where, None, None, "a checkpoint needs a label map (--labels labels.json)")


def _load_checkpoint(path: str, model, label_map: LabelMap, model_name: str) -> None:
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, None, None, "checkpoint file not found")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(p, None, None, f"not a torch checkpoint ({msg[:160]})") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(p, None, None, "not a state dict; save one with torch.save(model.state_dict(), path)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise InputError(p, None, missing[0],
                         f"missing from the checkpoint ({len(missing)} keys missing; is it a {model_name}?)")
    if unexpected:
        raise InputError(p, None, unexpected[0],
                         f"not a parameter of {model_name} ({len(unexpected)} unexpected keys)")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            msg = f"shape {list(sd[k].shape)} does not match the model's {list(v.shape)}"
            if k.startswith(("roi_heads.box_predictor", "roi_heads.mask_predictor")):
                ck = int(sd["roi_heads.box_predictor.cls_score.weight"].shape[0])
                msg += (f" (the checkpoint has {ck} classes, the label map {label_map.source} "
                        f"{label_map.num_classes} with background)")
            raise InputError(p, None, k, msg)
    model.load_state_dict(sd, strict=True)


def build_detector(spec: DetectorSpec, *, projection: np.ndarray, device: str = "cpu") -> "Detector":
    """Build the model a spec describes and wrap it in a :class:`Detector`.

    Parameters
    ----------
    spec : DetectorSpec
    projection : numpy.ndarray, shape (12544, 512), float32
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :func:`resolve_device`).
    """
    import torch
    from torchvision.models import detection

    label_map = resolve_label_map(spec)
    builder = getattr(detection, spec.model)
    kwargs = dict(min_size=spec.min_size, max_size=spec.max_size, box_score_thresh=spec.score_threshold,
                  box_detections_per_img=spec.detections_per_image)
    if spec.weights == "DEFAULT":
        try:
            model = builder(weights="DEFAULT", **kwargs)
        except (OSError, RuntimeError) as e:
            raise InputError("--weights DEFAULT", None, None,
                             f"cannot get torchvision's weights ({e}); pass a checkpoint PATH") from None
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.init_seed)
            model = builder(weights=None, weights_backbone=None, num_classes=label_map.num_classes, **kwargs)
        if spec.weights is not None:
            _load_checkpoint(spec.weights, model, label_map, spec.model)
    return Detector(model, label_map=label_map, projection=projection, device=device)


class Detector:
    """A Mask R-CNN in eval mode plus the hooks that capture clustering features.

    Parameters
    ----------
    model : torchvision.models.detection.MaskRCNN
    label_map : LabelMap
    projection : numpy.ndarray, shape (12544, 512), float32
    device : str
    """

    def __init__(self, model, *, label_map: LabelMap, projection: np.ndarray, device: str = "cpu"):
        import torch

        if projection.shape != (ROI_DIM, FEATURE_DIM):
            raise ValueError(f"projection must have shape {(ROI_DIM, FEATURE_DIM)}, got {projection.shape}")
        self.device = device
        self.label_map = label_map
        self.model = model.eval().to(device)
        self._proj = torch.from_numpy(np.ascontiguousarray(projection, dtype=np.float32)).to(device)
        self._captured: dict = {}
        heads = self.model.roi_heads
        self._handles = [
            heads.mask_roi_pool.register_forward_hook(self._on_mask_roi_pool, with_kwargs=True),
            heads.register_forward_hook(self._on_roi_heads),
        ]

    # hooks -------------------------------------------------------------------------
    def _on_mask_roi_pool(self, module, args, kwargs, output):
        # Same FPN features, final boxes and image shapes as the mask branch.
        self._captured["roi"] = self.model.roi_heads.box_roi_pool(*args, **kwargs)

    def _on_roi_heads(self, module, args, output):
        result, _losses = output
        # Keep the tensors: transform.postprocess later replaces r["masks"] by pasted masks.
        self._captured["mask_probs"] = [r["masks"] for r in result]

    def close(self) -> None:
        """Remove the hooks (the model then behaves like plain torchvision)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # inference ---------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect on a batch of images in one forward pass.

        Parameters
        ----------
        images : sequence of numpy.ndarray, each shape (h, w, 3), uint8 RGB

        Returns
        -------
        list of Detections, one per image, in order
        """
        import torch
        import torch.nn.functional as F

        if not images:
            return []
        tensors = [torch.from_numpy(np.require(im, np.uint8, ["C", "W"])).to(self.device)
                   .permute(2, 0, 1).float().div_(255) for im in images]
        self._captured.clear()
        with torch.inference_mode():
            out = self.model(tensors)
            roi = self._captured.pop("roi")
            probs28 = self._captured.pop("mask_probs")
            counts = [len(o["boxes"]) for o in out]
            total = sum(counts)
            if roi.shape[0] != total or sum(len(p) for p in probs28) != total:
                raise RuntimeError("captured ROI features do not line up with the detections")
            if total:
                att = F.adaptive_avg_pool2d(torch.cat(probs28), ROI_SIZE)  # (N, 1, 7, 7)
                feats = ((roi * att).flatten(1) @ self._proj).float().cpu().numpy()  # (N, 512)
            else:
                feats = np.zeros((0, FEATURE_DIM), np.float32)
            results = []
            start = 0
            for im, o, n in zip(images, out, counts):
                results.append(self._one(im, o, feats[start:start + n]))
                start += n
        return results

    def _one(self, image: np.ndarray, o: dict, feats: np.ndarray) -> Detections:
        h, w = int(image.shape[0]), int(image.shape[1])
        probs = o["masks"][:, 0]  # (n, h, w) probabilities pasted into the image
        binar = probs > MASK_THRESHOLD
        n_in = binar.sum((1, 2))
        inside = (probs * binar).sum((1, 2))
        outside = (probs * ~binar).sum((1, 2))
        pred_iou = (inside / (n_in + outside).clamp_min(1e-12)).double().cpu().numpy()
        keep = (n_in > 0).cpu().numpy()
        if not keep.all():
            log.debug("dropped %d detection(s) with an empty mask", int((~keep).sum()))
        binar_np = binar[_bool_index(keep, binar.device)].to("cpu").numpy().astype(np.uint8)
        return Detections(
            height=h, width=w,
            boxes=o["boxes"].double().cpu().numpy()[keep],
            labels=o["labels"].cpu().numpy().astype(np.int64)[keep],
            scores=o["scores"].double().cpu().numpy()[keep],
            pred_iou=pred_iou[keep],
            rle=[_rle.encode(m) for m in binar_np],
            features=np.ascontiguousarray(feats[keep], dtype=np.float32),
        )


def _bool_index(mask: np.ndarray, device):
    """A boolean numpy index as a torch tensor on ``device``."""
    import torch

    return torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)
