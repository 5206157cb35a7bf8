"""Finding and reading the images to detect on.

Images are the ``.jpg``, ``.jpeg`` and ``.png`` files (any letter case) under a
folder, searched recursively and sorted by their relative POSIX path, so the
``image_id`` of an image (its position in that order) is the same on every run
over the same folder. Hidden files and folders (names starting with ``.``) are
skipped. Pixels are read as stored, without applying EXIF orientation, so
heights and widths agree with COCO's.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of the images under ``root``, sorted.

    Raises
    ------
    crowdprop.errors.InputError
        ``root`` is not a folder, or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, None, None, "not a folder of images")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append((rel / name).as_posix())
    if not found:
        raise InputError(root, None, None, f"no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sorted(found)


def read_image(root: str | Path, file_name: str) -> np.ndarray:
    """Read one image as RGB.

    Returns
    -------
    numpy.ndarray, shape (h, w, 3), uint8

    Raises
    ------
    crowdprop.errors.InputError
        The file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(root) / file_name
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise InputError(path, None, None, f"cannot read image: {e}") from None
