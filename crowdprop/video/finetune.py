"""Test-time fine-tuning of the network on one video (imports torch).

Loss of a step, over a batch of neighbouring frame pairs ``(t, t+1)``:

    L = CE_w(labeled pixels of t and t+1)  +  lam * mean over non-occluded pixels x of t of
        sum_k (p_t(x)_k - p_{t+1}(x + f_t(x))_k)^2

where ``CE_w`` weighs class k by ``n / (K' n_k)`` over the labeled pixels when ``balanced``
(people label mostly background when asked about small units: without it the network forgets
the rare classes), ``f_t`` is the flow from t to t+1 and the occluded pixels are those of the
forward-backward check (:mod:`.flow`). Schedule (``[video]`` config): ``finetune_steps``
Adam steps per round at ``finetune_lr``, ``finetune_pairs`` pairs per step, half of them
(rounded up) drawn among pairs that hold labeled pixels. Step ``s`` of round ``r`` draws its
pairs from ``numpy.random.default_rng([seed, r, s])`` and seeds torch from the same
generator, so a run resumed from a checkpoint at step ``s`` (model and optimizer state) does
exactly what the uninterrupted run did.

Frames, labels, flows and occlusion masks may be whole arrays or lazy ones
(:class:`crowdprop.video.rundir.ChunkedArray`, :class:`RegionLabels`): a step reads only its
pairs' frames, and the starting network's probabilities (the ``anchor`` term's teacher) are
computed for the 8-frame inference batches that hold them, as they are needed, so a long video
is never in memory at once (the values are those of one inference over every frame).
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from .model import to_tensor, torch_or_hint

log = logging.getLogger(__name__)


class RegionLabels:
    """Per-pixel labels ``lut[regions[t]]`` (-1: no label), made a frame at a time: ``regions``
    (T, H, W) region ids (lazy or whole), ``lut`` (n_regions,) each region's class or -1,
    ``region_frame`` (n_regions,) each region's frame."""

    def __init__(self, lut: np.ndarray, regions, region_frame: np.ndarray):
        self.lut = np.asarray(lut, np.int64)
        self.regions = regions
        self.region_frame = np.asarray(region_frame)
        self.shape = tuple(regions.shape)

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, idx):
        return self.lut[self.regions[idx]]

    def labeled_frames(self) -> np.ndarray:
        has = np.zeros(len(self.regions), bool)
        has[self.region_frame[self.lut >= 0]] = True
        return has

    def class_counts(self, n_classes: int) -> np.ndarray:
        counts = np.zeros(n_classes, np.int64)
        step = getattr(self.regions, "chunk", 64)
        for s in range(0, len(self.regions), step):
            lab = self.lut[self.regions[s:s + step]]
            counts += np.bincount(lab[lab >= 0].ravel(), minlength=n_classes)[:n_classes]
        return counts


def _labeled_frames(labels) -> np.ndarray:
    if isinstance(labels, RegionLabels):
        return labels.labeled_frames()
    return np.asarray((labels >= 0).reshape(len(labels), -1).any(1), bool)


class _Teacher:
    """The starting network's probabilities of given frames, computed in the aligned 8-frame
    batches one inference over the whole clip uses (a few batches cached)."""

    def __init__(self, model, frames, batch: int = 8, cache: int = 16):
        import copy

        self.model = copy.deepcopy(model).eval()
        self.frames = frames
        self.batch = batch
        self.cache: dict[int, np.ndarray] = {}
        self.order: list[int] = []
        self.size = cache

    def _block(self, b: int) -> np.ndarray:
        from .model import predict

        if b not in self.cache:
            s = b * self.batch
            self.cache[b] = predict(self.model, self.frames[s:s + self.batch], features=False, batch=self.batch)
            self.order.append(b)
            if len(self.order) > self.size:
                self.cache.pop(self.order.pop(0), None)
        return self.cache[b]

    def __getitem__(self, idx):
        torch = torch_or_hint()
        return torch.from_numpy(np.stack([self._block(int(t) // self.batch)[int(t) % self.batch] for t in idx]))


def warp_probs(p, flow):
    """Probabilities ``p`` (B, K, H, W) of frame t+1 sampled at ``x + flow[x]`` (flow (B, H, W, 2))."""
    torch = torch_or_hint()
    b, _, h, w = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    x = (gx[None] + flow[..., 0]) / max(w - 1, 1) * 2 - 1
    y = (gy[None] + flow[..., 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([x, y], -1)
    return torch.nn.functional.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=True)


def class_weights(labels, n_classes: int):
    """Cross-entropy weights from the labeled pixels: ``n / (K' * n_k)`` for the K' classes present,
    clipped to [0.1, 10] (1 for absent classes), so a class people labeled little still counts."""
    torch = torch_or_hint()
    if isinstance(labels, RegionLabels):
        counts = labels.class_counts(n_classes).astype(np.float64)
    else:
        counts = np.bincount(labels[labels >= 0].ravel(), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes)
    if present.any():
        w[present] = np.clip(counts.sum() / (present.sum() * counts[present]), 0.1, 10.0)
    return torch.tensor(w, dtype=torch.float32)


def step_loss(model, x, y, flow, valid, lam: float, weight=None, teacher=None, anchor: float = 0.0):
    """(total, ce, consistency) for pairs: ``x`` (2B, 3, H, W) frames t then t+1, ``y`` (2B, H, W)
    labels with -1 unlabeled, ``flow`` (B, H, W, 2), ``valid`` (B, H, W) non-occluded; with
    ``anchor`` > 0, plus ``anchor`` x the cross-entropy against the starting network's
    probabilities ``teacher`` (2B, K, H, W) on unlabeled pixels."""
    torch = torch_or_hint()
    f = torch.nn.functional
    logits = model(x)
    n = len(flow)
    if (y >= 0).any():
        ce = f.cross_entropy(logits, y, weight=weight, ignore_index=-1)
    else:
        ce = logits.sum() * 0.0
    p = torch.softmax(logits, 1)
    pt, pn = p[:n], p[n:]
    warped = warp_probs(pn, flow)
    diff = ((pt - warped) ** 2).sum(1)
    denom = valid.sum().clamp(min=1)
    cons = (diff * valid).sum() / denom
    total = ce + lam * cons
    if anchor > 0 and teacher is not None:
        free = (y < 0).float()
        soft = -(teacher * f.log_softmax(logits, 1)).sum(1)
        total = total + anchor * (soft * free).sum() / free.sum().clamp(min=1)
    return total, ce, cons


def finetune(model, frames, labels, fwd, occ_fwd, *,
             steps: int, lr: float, lam: float, pairs: int, seed: int, round_: int, balanced: bool = False,
             anchor: float = 0.0, state: dict | None = None, checkpoint_every: int = 0,
             on_checkpoint: Callable[[int, dict], None] | None = None) -> dict:
    """Fine-tune ``model`` in place; returns the losses per step (``{"loss": [...], "ce": [...],
    "consistency": [...]}``, from the resumed step on).

    ``frames`` uint8 (T, H, W, 3), ``labels`` int (T, H, W) with -1 where no person labeled the
    pixel (or a :class:`RegionLabels`), ``fwd`` (T-1, H, W, 2) and ``occ_fwd`` (T-1, H, W): whole
    arrays or lazy ones indexed by frame. ``state`` (from a
    checkpoint: ``{"step", "model", "optimizer"}``) resumes at ``state["step"]``. Every
    ``checkpoint_every`` steps ``on_checkpoint(step, state)`` is called with the state to resume
    from (the caller writes it atomically)."""
    torch = torch_or_hint()
    t_frames = len(frames)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # the network as it starts, before a checkpoint is loaded
    teacher = _Teacher(model, frames) if anchor > 0 and t_frames >= 2 else None
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    hist: dict[str, list[float]] = {"loss": [], "ce": [], "consistency": []}
    if t_frames < 2 or steps <= start:
        return hist
    has = _labeled_frames(labels)
    labeled_pairs = np.flatnonzero(has[:-1] | has[1:])
    all_pairs = np.arange(t_frames - 1)
    with torch.no_grad():
        n_classes = model(to_tensor(frames[0:1])).shape[1]
    weight = class_weights(labels, n_classes) if balanced else None

    def y_of(ix):
        return torch.from_numpy(np.asarray(labels[ix]).astype(np.int64))

    model.train()
    for s in range(start, steps):
        rng = np.random.default_rng([seed, round_, s])
        torch.manual_seed(int(rng.integers(2 ** 31 - 1)))
        k = min(pairs, len(all_pairs))
        k_lab = min((k + 1) // 2, len(labeled_pairs))
        pick = list(rng.choice(labeled_pairs, size=k_lab, replace=False)) if k_lab else []
        rest = np.setdiff1d(all_pairs, pick)
        pick += list(rng.choice(rest, size=min(k - k_lab, len(rest)), replace=False))
        ix = np.sort(np.array(pick, np.int64))
        x = torch.cat([to_tensor(frames[ix]), to_tensor(frames[ix + 1])])
        y = torch.cat([y_of(ix), y_of(ix + 1)])
        tt = torch.cat([teacher[ix], teacher[ix + 1]]) if teacher is not None else None
        flow = torch.from_numpy(np.ascontiguousarray(fwd[ix], np.float32))
        valid = torch.from_numpy(~np.asarray(occ_fwd[ix], bool)).float()
        loss, ce, cons = step_loss(model, x, y, flow, valid, lam, weight, tt, anchor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist["loss"].append(float(loss.detach()))
        hist["ce"].append(float(ce.detach()))
        hist["consistency"].append(float(cons.detach()))
        done = s + 1
        if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0 and done < steps:
            on_checkpoint(done, {"step": done,
                                 "model": {k_: v.detach().clone() for k_, v in model.state_dict().items()},
                                 "optimizer": opt.state_dict()})
    model.eval()
    return hist
