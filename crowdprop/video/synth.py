"""Synthetic clips with exact per-frame ground truth and known motion.

A clip is textured objects of several classes (disc, box, triangle) moving over a textured
background, with a camera that pans and zooms, objects that occlude each other, and a blur.
Everything is drawn from a seeded ``numpy.random.Generator``.

Two domains share the classes and shapes but not their looks: ``pretrain`` clips (what the
"pretrained" network of :mod:`.model` is trained on) and ``heldout`` clips (the sample and the
benchmark), whose colours, stripe frequencies, background and speeds were never used in
pretraining, so the pretrained network is uncertain on them and labels help.

Motion (per clip, in ``Clip.meta``): object ``i`` is at world position ``p0_i + v_i * t``; the
camera's offset is ``o0 + cv * t`` and its zoom ``1 + zoom * t`` about the frame's centre, so a
world point ``w`` is seen at ``(1 + zoom * t) * (w - o_t - c) + c`` with ``c = size / 2``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("background", "disc", "box", "triangle")
"""Class names; a label map holds their index."""

# base colours (RGB) per object class and domain; heldout ones are never seen in pretraining
_COLOURS = {
    "pretrain": {1: (200, 60, 60), 2: (60, 180, 70), 3: (60, 80, 210)},
    "heldout": {1: (215, 120, 45), 2: (45, 165, 150), 3: (140, 70, 200)},
}
_FREQ = {"pretrain": (0.06, 0.14), "heldout": (0.16, 0.28)}
_SPEED = {"pretrain": (0.5, 2.0), "heldout": (1.0, 2.8)}
_BG = {"pretrain": ((110, 100, 90), (40, 30, 30)), "heldout": ((95, 115, 95), (30, 45, 30))}


@dataclass
class Clip:
    frames: np.ndarray
    """uint8 (T, H, W, 3) RGB."""
    labels: np.ndarray
    """uint8 (T, H, W) class index into :data:`CLASSES`."""
    meta: dict = field(default_factory=dict)
    """Known motion and looks: objects (class, p0, v, scale), camera (o0, cv, zoom), blur."""


def _texture(rng: np.random.Generator, side: int, base, domain: str) -> np.ndarray:
    """float32 (side, side, 3): a base colour with stripes at a random angle and frequency, plus grain."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    f = rng.uniform(*_FREQ[domain])
    a = rng.uniform(0, np.pi)
    s = np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    jitter = rng.normal(0, 12, 3)
    tint = rng.uniform(0.4, 1.0, 3)
    tex = np.asarray(base, np.float32) + jitter + 45 * s[..., None] * tint
    tex += rng.normal(0, 6, tex.shape)
    return np.clip(tex, 0, 255).astype(np.float32)


def _background(rng: np.random.Generator, side: int, domain: str) -> np.ndarray:
    import cv2

    mean, spread = _BG[domain]
    coarse = rng.normal(0, 1, (side // 8 + 2, side // 8 + 2, 4)).astype(np.float32)
    smooth = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    smooth = smooth[..., :1] + 0.25 * smooth[..., 1:]  # mostly brightness, a little colour
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    if domain == "heldout":  # soft checks, never in pretraining
        pattern = np.sign(np.sin(xx * 0.35) * np.sin(yy * 0.35))[..., None] * 12
    else:
        pattern = np.sin(xx * 0.21 + yy * 0.13)[..., None] * 10
    bg = np.asarray(mean, np.float32) + np.asarray(spread, np.float32) * smooth + pattern
    bg += rng.normal(0, 5, bg.shape)
    return np.clip(bg, 0, 255).astype(np.float32)


def _shape(cls: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (side, side) 0/1 mask of one object in its own canvas."""
    import cv2

    m = np.zeros((side, side), np.uint8)
    c = side / 2
    if cls == 1:
        cv2.circle(m, (int(round(c)), int(round(c))), int(side * rng.uniform(0.36, 0.46)), 1, -1)
    elif cls == 2:
        w, h = side * rng.uniform(0.45, 0.9) / 2, side * rng.uniform(0.45, 0.9) / 2
        ang = rng.uniform(0, 90)
        box = cv2.boxPoints(((c, c), (2 * w, 2 * h), ang))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 1)
    else:
        r = side * 0.46
        base = rng.uniform(0, 2 * np.pi)
        angles = base + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
        pts = np.stack([c + r * np.cos(angles), c + r * np.sin(angles)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(np.float32)


def make_clip(rng: np.random.Generator | int, *, frames: int = 12, size: int = 48, objects: int = 3,
              domain: str = "heldout", pan: bool = True, zoom: bool = True, blur: bool = True) -> Clip:
    """One synthetic clip (see the module's docstring for the motion model)."""
    import cv2

    if domain not in _COLOURS:
        raise ValueError(f"domain must be one of {sorted(_COLOURS)}, got {domain!r}")
    if frames < 2 or size < 16 or objects < 1:
        raise ValueError("need frames >= 2, size >= 16, objects >= 1")
    rng = np.random.default_rng(rng)
    c = size / 2
    cv = rng.uniform(-1.0, 1.0, 2) if pan else np.zeros(2)
    z_rate = rng.uniform(-0.01, 0.02) if zoom else 0.0
    canvas = 3 * size + int(np.ceil(np.abs(cv).max() * frames))
    o0 = np.full(2, (canvas - size) / 2) - cv * (frames - 1) / 2
    bg = _background(rng, canvas, domain)
    classes = list(rng.permutation(np.arange(1, len(CLASSES))))
    while len(classes) < objects:
        classes.append(int(rng.integers(1, len(CLASSES))))
    objs: list[dict[str, Any]] = []
    for i in range(objects):
        cls = int(classes[i])
        side = int(round(size * rng.uniform(0.28, 0.45)))
        speed = rng.uniform(*_SPEED[domain])
        ang = rng.uniform(0, 2 * np.pi)
        v = speed * np.array([np.cos(ang), np.sin(ang)])
        screen_mid = rng.uniform(0.25, 0.75, 2) * size
        o_mid = o0 + cv * (frames - 1) / 2
        p0 = screen_mid + o_mid - v * (frames - 1) / 2
        objs.append({"class": cls, "side": side, "p0": p0, "v": v,
                     "mask": _shape(cls, side, rng), "tex": _texture(rng, side, _COLOURS[domain][cls], domain)})
    sigma = float(rng.uniform(0.0, 0.9)) if blur else 0.0
    out = np.zeros((frames, size, size, 3), np.uint8)
    lab = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        z = 1.0 + z_rate * t
        o = o0 + cv * t
        m = np.array([[z, 0, c - z * (o[0] + c)], [0, z, c - z * (o[1] + c)]], np.float32)
        img = cv2.warpAffine(bg, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        lt = np.zeros((size, size), np.uint8)
        for ob in objs:
            s = ob["side"]
            p = ob["p0"] + ob["v"] * t
            tx = z * (p[0] - s / 2 - o[0] - c) + c
            ty = z * (p[1] - s / 2 - o[1] - c) + c
            mo = np.array([[z, 0, tx], [0, z, ty]], np.float32)
            alpha = cv2.warpAffine(ob["mask"], mo, (size, size), flags=cv2.INTER_LINEAR)
            tex = cv2.warpAffine(ob["tex"], mo, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            img = img * (1 - alpha[..., None]) + tex * alpha[..., None]
            lt[alpha > 0.5] = ob["class"]
        if sigma > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = (img + rng.normal(0, 3, img.shape)).astype(img.dtype)  # as += did: float64 sum, img's dtype
        out[t] = np.clip(np.round(img), 0, 255).astype(np.uint8)
        lab[t] = lt
    meta = {"domain": domain, "size": size, "frames": frames, "blur_sigma": sigma,
            "camera": {"o0": o0.tolist(), "cv": cv.tolist(), "zoom": z_rate},
            "objects": [{"class": CLASSES[ob["class"]], "p0": ob["p0"].tolist(), "v": ob["v"].tolist(),
                         "side": ob["side"]} for ob in objs]}
    return Clip(out, lab, meta)


def make_clips(n: int, seed: int, *, domain: str = "heldout", **kw) -> list[Clip]:
    """``n`` clips, clip ``i`` from the generator ``SeedSequence([seed, i])``."""
    return [make_clip(np.random.default_rng([seed, i]), domain=domain, **kw) for i in range(n)]


def labels_json() -> dict:
    """The ``labels.json`` of synthetic clips: ``{"classes": [{"id": i, "name": n}, ...]}``."""
    return {"classes": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}


def write_clip(clip: Clip, folder: str | Path, *, gt: bool = True) -> Path:
    """Write ``frames/00000.png ...``, ``gt/00000.png ...`` (class ids as 8-bit grey) and
    ``labels.json`` (plus ``motion.json``) under ``folder``."""
    from PIL import Image

    folder = Path(folder)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(folder / "frames" / f"{t:05d}.png", optimize=True)
    if gt:
        (folder / "gt").mkdir(exist_ok=True)
        for t, lab in enumerate(clip.labels):
            Image.fromarray(lab).save(folder / "gt" / f"{t:05d}.png", optimize=True)
    (folder / "labels.json").write_text(json.dumps(labels_json(), indent=1) + "\n")
    (folder / "motion.json").write_text(json.dumps(clip.meta, indent=1) + "\n")
    return folder
