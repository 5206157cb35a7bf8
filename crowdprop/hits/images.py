"""Overlay images for the worker page: one picture per question.

Each picture is the mask's image (or a neutral gray canvas when no image file
is available, e.g. the shipped sample, which only has COCO URLs) cropped
around the mask's box with context, with the mask drawn as a translucent
color and a solid outline, resized to a square of ``out_px`` pixels.

Glossary
--------
mask row
    One row of masks.parquet (:data:`crowdprop.schema.MASK_COLUMNS`): ``rle``,
    ``height``, ``width``, ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``...
crop
    A square of side ``max(context * max(bbox_w, bbox_h), min_crop)`` pixels
    centred on the box; parts outside the image are gray.
target
    Where image files go and how workers fetch them: :class:`LocalFolderTarget`
    (a folder served by the local endpoint's ``/images/`` or at your own base
    URL) or :class:`S3Target` (``put_object`` + presigned GET URLs).

File names are deterministic (``mask_<mask_id>.jpg``), so rendering again is
idempotent and a restarted campaign reuses what is already there.
"""
from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import atomic_write_bytes
from ..masks import rle

log = logging.getLogger(__name__)

COLOR = (255, 140, 0)
"""Overlay color (orange, as the instructions say)."""
GRAY = 128


def crop_box(bbox: tuple[float, float, float, float], *, context: float = 2.0, min_crop: int = 128,
             shape: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the square crop around a COCO box ``[x, y, w, h]``.

    The side is ``max(context * max(w, h), min_crop)``, at most the image's
    longer side when ``shape = (height, width)`` is given; the square is then
    shifted to stay inside the image along each axis where it fits.
    """
    x, y, w, h = (float(v) for v in bbox)
    side = int(np.ceil(max(context * max(w, h), min_crop)))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(np.floor(cx - side / 2.0)), int(np.floor(cy - side / 2.0))
    if shape is not None:
        ih, iw = int(shape[0]), int(shape[1])
        side = max(1, min(side, max(ih, iw)))
        x0, y0 = int(np.floor(cx - side / 2.0)), int(np.floor(cy - side / 2.0))
        x0 = min(max(x0, 0), iw - side) if side <= iw else (iw - side) // 2
        y0 = min(max(y0, 0), ih - side) if side <= ih else (ih - side) // 2
    return x0, y0, side


def _cut(arr: np.ndarray, x0: int, y0: int, side: int, fill: int) -> np.ndarray:
    """``arr[y0:y0+side, x0:x0+side]`` with ``fill`` outside ``arr``."""
    out = np.full((side, side) + arr.shape[2:], fill, dtype=arr.dtype)
    h, w = arr.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def overlay(mask: np.ndarray, image: np.ndarray | None, bbox: tuple[float, float, float, float], *,
            out_px: int = 256, context: float = 2.0, min_crop: int = 128, color: tuple[int, int, int] = COLOR,
            alpha: float = 0.45, outline_px: int = 2) -> np.ndarray:
    """Draw ``mask`` over ``image`` cropped around ``bbox``.

    Parameters
    ----------
    mask
        ``(h, w)`` binary mask.
    image
        ``(h, w, 3)`` uint8 RGB image, or None for a gray canvas.
    bbox
        COCO box ``[x, y, w, h]`` of the mask.

    Returns
    -------
    ``(out_px, out_px, 3)`` uint8 RGB picture.
    """
    from PIL import Image
    from scipy import ndimage

    h, w = mask.shape
    if image is None:
        image = np.full((h, w, 3), GRAY, dtype=np.uint8)
    x0, y0, side = crop_box(bbox, context=context, min_crop=min_crop, shape=(h, w))
    img = Image.fromarray(_cut(image, x0, y0, side, GRAY)).resize((out_px, out_px), Image.BILINEAR)
    m = Image.fromarray(_cut(mask.astype(np.uint8) * 255, x0, y0, side, 0)).resize((out_px, out_px), Image.NEAREST)
    m = np.asarray(m) > 127
    edge = m & ~ndimage.binary_erosion(m, iterations=outline_px, border_value=0)
    halo = ndimage.binary_dilation(m, iterations=1) & ~m
    out = np.asarray(img, dtype=np.float32).copy()
    col = np.asarray(color, dtype=np.float32)
    out[m] = (1.0 - alpha) * out[m] + alpha * col
    out[edge] = col
    out[halo] = 0.35 * out[halo]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def encode(picture: np.ndarray, fmt: str = "jpeg") -> bytes:
    """PNG or JPEG bytes of an ``(h, w, 3)`` uint8 picture (deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(picture).save(buf, format="PNG", optimize=False)
    elif fmt == "jpeg":
        Image.fromarray(picture).save(buf, format="JPEG", quality=88)
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', not {fmt!r}")
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# -------------------------------------------------------------------- targets
class ImageTarget(Protocol):
    def has(self, name: str) -> bool: ...

    def put(self, name: str, data: bytes, content_type: str) -> None: ...

    def url(self, name: str) -> str: ...


class LocalFolderTarget:
    """Files in ``folder``, fetched by workers at ``base_url/<name>``."""

    def __init__(self, folder: str | os.PathLike, base_url: str):
        self.folder = Path(folder)
        self.base_url = base_url.rstrip("/")

    def has(self, name: str) -> bool:
        return (self.folder / name).exists()

    def put(self, name: str, data: bytes, content_type: str) -> None:
        atomic_write_bytes(self.folder / name, data)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{quote(name)}"


class S3Target:
    """Objects ``s3://bucket/prefix<name>``, fetched through presigned GET URLs.

    ``client`` is a boto3 S3 client (see :func:`s3_client`); URLs stay valid for
    ``expires_s`` seconds (at most 7 days), i.e. the HIT lifetime.
    """

    def __init__(self, client, bucket: str, prefix: str, *, expires_s: int):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.expires_s = int(min(expires_s, 7 * 86400))
        self._uploaded: set[str] = set()
        self._urls: dict[str, str] = {}

    def has(self, name: str) -> bool:
        return name in self._uploaded

    def put(self, name: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType=content_type,
                               CacheControl=f"max-age={self.expires_s}")
        self._uploaded.add(name)

    def url(self, name: str) -> str:
        if name not in self._urls:
            self._urls[name] = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + name}, ExpiresIn=self.expires_s)
        return self._urls[name]


def s3_client(*, region: str = "us-east-1", profile: str | None = None):
    """A boto3 S3 client that signs presigned URLs with SigV4 (credentials from the AWS chain)."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client("s3", config=BotoConfig(signature_version="s3v4", retries={"max_attempts": 3,
                                                                                        "mode": "standard"}))


# ---------------------------------------------------------------------- store
class OverlayStore:
    """Renders each mask's picture once into ``target`` and hands out its URL.

    Parameters
    ----------
    target
        :class:`LocalFolderTarget` or :class:`S3Target`.
    images
        images.parquet (``id``, ``file_name``), or None.
    image_root
        Folder holding the image files named by ``file_name``; None: gray canvas.
    out_px, context, min_crop, fmt
        Picture size, crop context and format (``jpeg`` or ``png``).
    """

    def __init__(self, target: ImageTarget, *, images: pd.DataFrame | None = None,
                 image_root: str | os.PathLike | None = None, out_px: int = 256, context: float = 2.0,
                 min_crop: int = 128, fmt: str = "jpeg"):
        self.target = target
        self.files = {} if images is None else dict(zip(images["id"].astype(int), images["file_name"].astype(str)))
        self.image_root = Path(image_root) if image_root else None
        self.out_px, self.context, self.min_crop, self.fmt = out_px, context, min_crop, fmt
        self._warned = False

    def name(self, row: pd.Series) -> str:
        return f"mask_{int(row['mask_id'])}.{'jpg' if self.fmt == 'jpeg' else 'png'}"

    def image_for(self, row: pd.Series) -> np.ndarray | None:
        """The RGB image of a mask row, or None when there is no file for it."""
        file_name = self.files.get(int(row["image_id"]))
        if self.image_root is None or not file_name:
            return None
        path = self.image_root / file_name
        if not path.exists():
            path = self.image_root / Path(file_name).name
        if not path.exists():
            if not self._warned:
                log.warning("image file %s not found under %s; drawing masks on gray", file_name, self.image_root)
                self._warned = True
            return None
        image = _read_image(str(path))
        if image.shape[:2] != (int(row["height"]), int(row["width"])):
            raise InputError(path, f"image {int(row['image_id'])}", "height/width",
                             f"image is {image.shape[1]}x{image.shape[0]} but its masks are "
                             f"{int(row['width'])}x{int(row['height'])}")
        return image

    def render(self, row: pd.Series) -> bytes:
        """The encoded picture of one mask row."""
        mask = rle.decode(row["rle"], int(row["height"]), int(row["width"]))
        bbox = (row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"])
        pic = overlay(mask, self.image_for(row), bbox, out_px=self.out_px, context=self.context,
                      min_crop=self.min_crop)
        return encode(pic, self.fmt)

    def url(self, row: pd.Series) -> str:
        """URL of the mask's picture, rendering and storing it first if needed."""
        name = self.name(row)
        if not self.target.has(name):
            self.target.put(name, self.render(row), "image/jpeg" if self.fmt == "jpeg" else "image/png")
        return self.target.url(name)
