"""The segmentation network, its checkpoints and its pretraining (imports torch).

``smallseg``: a fully convolutional network of our own, four 3x3 convolutions with dilations
1, 2, 4, 8 (receptive field 31 px) and a 1x1 head, about 28k parameters, fast on one CPU
thread. Its last hidden layer is the backbone feature pooled into unit embeddings.
``lraspp``: torchvision's ``lraspp_mobilenet_v3_large`` (``weights=None``; its backbone's
ImageNet weights when ``pretrained_backbone`` and torchvision can fetch them).

A checkpoint is ``torch.save({"arch", "classes", "width", "state_dict"})``, read back with
``torch.load(weights_only=True)``. No weights are downloaded at run time: the "pretrained"
network of the sample and the tests comes from :func:`pretrain` on synthetic clips of the
``pretrain`` domain (:mod:`.synth`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingExtra

log = logging.getLogger(__name__)


def torch_or_hint():
    try:
        import torch
    except ImportError as e:
        raise MissingExtra("detect", "torch") from e
    return torch


def build(arch: str, n_classes: int, width: int = 32):
    torch = torch_or_hint()
    nn: Any = torch.nn

    if arch == "smallseg":
        class SmallSeg(nn.Module):
            def __init__(self):
                super().__init__()
                layers, cin = [], 3
                for d in (1, 2, 4, 8):
                    layers += [nn.Conv2d(cin, width, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
                    cin = width
                self.body = nn.Sequential(*layers)
                self.head = nn.Conv2d(width, n_classes, 1)

            def forward(self, x, features: bool = False):
                f = self.body(x)
                out = self.head(f)
                return (out, f) if features else out

        return SmallSeg()
    if arch == "lraspp":
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        inner = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=n_classes)

        class LRASPP(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x, features: bool = False):
                feats = self.inner.backbone(x)
                out = self.inner.classifier(feats)
                out = nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
                if not features:
                    return out
                f = nn.functional.interpolate(feats["high"], size=x.shape[-2:], mode="bilinear", align_corners=False)
                return out, f

        return LRASPP()
    raise ValueError(f"unknown architecture {arch!r} (smallseg or lraspp)")


def to_tensor(frames: np.ndarray):
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in about [-1, 1]."""
    torch = torch_or_hint()
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def checkpoint(model, arch: str, classes: list[str], width: int) -> dict:
    return {"arch": arch, "classes": list(classes), "width": int(width),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def save(ck: dict, path: str | Path) -> None:
    from ..io import atomic_path

    torch = torch_or_hint()
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)


def load(path: str | Path, *, what: str = "--model") -> tuple[object, dict]:
    """(model, checkpoint) from a checkpoint file; one-line errors naming the file."""
    torch = torch_or_hint()
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, None, what, "no such file") from None
    except Exception as e:  # a pickle that is not a checkpoint, a truncated file
        raise InputError(path, None, what, f"not a crowdprop video checkpoint ({type(e).__name__})") from None
    if not isinstance(ck, dict) or not {"arch", "classes", "state_dict"} <= set(ck):
        raise InputError(path, None, what, "not a crowdprop video checkpoint (needs arch, classes, state_dict)")
    model = build(ck["arch"], len(ck["classes"]), int(ck.get("width", 32)))
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise InputError(path, None, "state_dict", str(e).splitlines()[0]) from None
    model.eval()
    return model, ck


def predict(model, frames: np.ndarray, *, batch: int = 8, features: bool = True):
    """Softmax probabilities float32 (T, K, H, W) and, with ``features``, the backbone's
    features float32 (T, C, H, W), a batch of frames at a time."""
    torch = torch_or_hint()
    probs, feats = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = to_tensor(frames[i:i + batch])
            out, f = model(x, features=True)
            probs.append(torch.softmax(out, 1).numpy())
            if features:
                feats.append(f.numpy())
    p = np.concatenate(probs).astype(np.float32)
    return (p, np.concatenate(feats).astype(np.float32)) if features else p


def pretrain(*, clips: int = 24, steps: int = 400, seed: int = 0, frames: int = 8, size: int = 48,
             width: int = 32, lr: float = 3e-3, batch: int = 8, arch: str = "smallseg") -> dict:
    """Train a network on ``pretrain``-domain synthetic clips and return its checkpoint.

    Plain cross-entropy on every pixel of randomly drawn frames, Adam, seeded
    (``torch.manual_seed`` from ``numpy.random.default_rng(seed)``). The benchmark and the tests
    call it; ``crowdprop video pretrain`` saves its result.
    """
    torch = torch_or_hint()
    from .synth import CLASSES, make_clips

    rng = np.random.default_rng(seed)
    torch.manual_seed(int(rng.integers(2 ** 31 - 1)))
    data = make_clips(clips, int(rng.integers(2 ** 31 - 1)), domain="pretrain", frames=frames, size=size)
    x_all = to_tensor(np.concatenate([c.frames for c in data]))
    y_all = torch.from_numpy(np.concatenate([c.labels for c in data]).astype(np.int64))
    model = build(arch, len(CLASSES), width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(x_all), size=min(batch, len(x_all)), replace=False))
        x, y = x_all[idx], y_all[idx]
        if rng.random() < 0.5:  # horizontal flip
            x, y = x.flip(-1), y.flip(-1)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("pretrain step %d loss %.3f", step, float(loss.detach()))
    model.eval()
    return checkpoint(model, arch, list(CLASSES), width)
