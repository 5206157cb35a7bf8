"""What ``crowdprop video init`` reads: frames, ``labels.json`` and ground-truth label maps.

* ``--frames``: a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``,
  in name order) or a video file OpenCV decodes; every frame the size of the first.
* ``--labels``: ``{"classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "car"}, ...]}``,
  ids 0 .. K-1, at most 255 classes. Every class of the model's checkpoint must be there.
* ``--gt``: a folder of 8-bit label maps (one per frame, in name order, pixel = class id).

Every problem is one line naming the file, the record and the field (exit code 2).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _image_files(folder: Path, what: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise InputError(folder, None, what, f"no images ({', '.join(sorted(IMAGE_EXT))}) in this folder")
    return files


def _read_image(path: Path, what: str, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode == "L" and im.mode not in ("L", "P", "I;16", "I"):
                raise InputError(path, None, what, f"a label map must be 8-bit grey (class ids), got mode {im.mode}")
            return np.asarray(im.convert(mode) if im.mode != mode and mode == "RGB" else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, None, what, f"not a readable image ({type(e).__name__})") from None


class FrameSource:
    """``--frames`` read lazily: :meth:`chunks` yields uint8 ``(n, H, W, 3)`` RGB blocks of at most
    ``chunk`` frames, a folder's images read one file at a time and a video decoded frame by frame
    (OpenCV ``VideoCapture``), each checked as :func:`read_frames` checks them; :attr:`names` fills
    as they are read. A folder's frame count is known before reading (:attr:`count`; None for a
    video)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, None, "--frames", "no such file or folder")
        self.files = _image_files(self.path, "--frames") if self.path.is_dir() else None
        self.count: int | None = len(self.files) if self.files is not None else None
        self.names: list[str] = []
        self.shape: tuple[int, int, int] | None = None

    def _check(self, img: np.ndarray, i: int, where: Path) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputError(where, f"frame {i}", "--frames", f"expected an RGB image, got shape {img.shape}")
        if self.shape is None:
            self.shape = (int(img.shape[0]), int(img.shape[1]), int(img.shape[2]))
        elif img.shape != self.shape:
            first = self.files[0].name if self.files else "00000"
            raise InputError(where, f"frame {i}", "size", f"{img.shape[1]}x{img.shape[0]} px, but frame 0 "
                             f"({first}) is {self.shape[1]}x{self.shape[0]}")
        return img

    def _frames(self):
        if self.files is not None:
            for i, f in enumerate(self.files):
                yield self._check(_read_image(f, "--frames", "RGB"), i, f), f.name
            return
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        i = 0
        try:
            while cap.isOpened():
                ok, bgr = cap.read()
                if not ok:
                    break
                yield self._check(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), i, self.path), f"{i:05d}"
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise InputError(self.path, None, "--frames", "unreadable video: OpenCV decoded no frame (not a video, "
                             "or a codec it lacks); a folder of images works too")

    def chunks(self, chunk: int):
        block: list[np.ndarray] = []
        for img, name in self._frames():
            block.append(img)
            self.names.append(name)
            if len(block) == chunk:
                yield np.stack(block).astype(np.uint8)
                block = []
        if block:
            yield np.stack(block).astype(np.uint8)


class GtSource:
    """``--gt`` read lazily, a block of label maps at a time, each checked by :func:`_check_gt`
    (2-d, the frames' size, pixel values that are classes)."""

    def __init__(self, path: str | os.PathLike, n_classes: int, labels_path, frames: int | None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(self.path, None, "--gt", "expected a folder of label maps")
        self.files = _image_files(self.path, "--gt")
        self.n_classes = n_classes
        self.labels_path = labels_path
        if frames is not None:
            self.check_count(frames)

    def check_count(self, frames: int) -> None:
        if len(self.files) != frames:
            raise InputError(self.path, None, "--gt", f"{len(self.files)} label maps for {frames} frames")

    def read(self, start: int, hw: tuple[int, int], n: int) -> np.ndarray:
        """uint8 (n, H, W): the label maps of frames ``start .. start + n - 1``."""
        h, w = hw
        out = np.zeros((n, h, w), np.uint8)
        for j in range(n):
            i = start + j
            if i >= len(self.files):
                raise InputError(self.path, None, "--gt", f"{len(self.files)} label maps for more frames (frame {i} "
                                 "has none)")
            out[j] = _check_gt(_read_image(self.files[i], "--gt", "L"), self.files[i], i, (h, w), self.n_classes,
                               self.labels_path)
        return out


def _check_gt(lab: np.ndarray, f: Path, i: int, hw: tuple[int, int], n_classes: int, labels_path) -> np.ndarray:
    h, w = hw
    if lab.ndim != 2:
        raise InputError(f, f"frame {i}", "--gt", f"expected a 2-d label map, got shape {lab.shape}")
    if lab.shape != (h, w):
        raise InputError(f, f"frame {i}", "size", f"{lab.shape[1]}x{lab.shape[0]} px, the frames are {w}x{h}")
    if lab.max() >= n_classes:
        v = int(lab.max())
        raise InputError(f, f"frame {i}", "class", f"pixel value {v} is not a class of {labels_path} "
                         f"(ids 0 .. {n_classes - 1})")
    return lab


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """uint8 (T, H, W, 3) RGB and each frame's name (all in memory: small clips; ``crowdprop video
    init`` streams them with :class:`FrameSource`)."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, None, "--frames", "no such file or folder")
    if p.is_dir():
        files = _image_files(p, "--frames")
        frames: list[np.ndarray] = []
        names: list[str] = []
        for i, f in enumerate(files):
            img = _read_image(f, "--frames", "RGB")
            if img.ndim != 3 or img.shape[2] != 3:
                raise InputError(f, f"frame {i}", "--frames", f"expected an RGB image, got shape {img.shape}")
            if frames and img.shape != frames[0].shape:
                raise InputError(f, f"frame {i}", "size", f"{img.shape[1]}x{img.shape[0]} px, but frame 0 "
                                 f"({files[0].name}) is {frames[0].shape[1]}x{frames[0].shape[0]}")
            frames.append(img)
            names.append(f.name)
        return np.stack(frames).astype(np.uint8), names
    import cv2

    cap = cv2.VideoCapture(str(p))
    decoded: list[np.ndarray] = []
    try:
        while cap.isOpened():
            ok, bgr = cap.read()
            if not ok:
                break
            decoded.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    finally:
        cap.release()
    if not decoded:
        raise InputError(p, None, "--frames", "unreadable video: OpenCV decoded no frame (not a video, or a "
                         "codec it lacks); a folder of images works too")
    return np.stack(decoded).astype(np.uint8), [f"{i:05d}" for i in range(len(decoded))]


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names by id from ``labels.json``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, None, "--labels", "no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(p, None, None, f"not JSON ({type(e).__name__})") from None
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not classes:
        raise InputError(p, None, "classes", "expected a non-empty list of {\"id\", \"name\"}")
    names: dict[int, str] = {}
    for i, c in enumerate(classes):
        rec = f"classes[{i}]"
        if not isinstance(c, dict):
            raise InputError(p, rec, None, "expected an object {\"id\", \"name\"}")
        cid, name = c.get("id"), c.get("name")
        if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < 255:
            raise InputError(p, rec, "id", f"expected an integer in [0, 254], got {cid!r}")
        if not isinstance(name, str) or not name.strip():
            raise InputError(p, rec, "name", f"expected a non-empty string, got {name!r}")
        if cid in names:
            raise InputError(p, rec, "id", f"id {cid} appears twice")
        if name in names.values():
            raise InputError(p, rec, "name", f"name {name!r} appears twice")
        names[cid] = name
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise InputError(p, None, "classes", f"ids must be 0 .. {len(names) - 1}; id {missing[0]} is missing")
    return [names[i] for i in range(len(names))]


def check_model_classes(labels_path, names: list[str], model_classes: list[str], model_path) -> None:
    """Every class the network predicts must be in labels.json, with the same id."""
    for i, c in enumerate(model_classes):
        if c not in names:
            raise InputError(labels_path, None, "classes", f"missing class {c!r} (id {i}) of the model {model_path}")
        if names.index(c) != i:
            raise InputError(labels_path, None, "classes", f"class {c!r} has id {names.index(c)}, the model "
                             f"{model_path} has it as {i}")
    if len(names) != len(model_classes):
        extra = names[len(model_classes)]
        raise InputError(labels_path, None, "classes", f"class {extra!r} is not one the model {model_path} predicts")
