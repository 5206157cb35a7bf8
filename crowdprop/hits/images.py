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
    URL) or :class:`S3Target` (``put_object`` + presigned GET URLs, or plain
    URLs of unguessable names under a public prefix).

File names are deterministic (``mask_<mask_id>.jpg``), so rendering again is
idempotent and a restarted campaign reuses what is already there.

Image files are looked up inside the images folder only (:func:`image_candidates`):
a ``file_name`` with ``..`` climbing out of it is refused, an absolute one is
used when it lies in the folder, else looked up inside it (re-rooted, then by
its base name). Nothing is decoded whole: the mask is sampled at the picture's
pixels straight from its runs, and a JPEG image is decoded at the most reduced
scale (1/2, 1/4, 1/8: PIL ``draft``) that still gives ``out_px`` pixels across
the crop (other formats are decoded once and reduced). Images larger than
:data:`MAX_IMAGE_PIXELS` are refused at ``init`` (:func:`check_images`).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import io
import logging
import os
import posixpath
import warnings
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

MAX_IMAGE_PIXELS = 178_956_970
"""Largest image (height x width) crowdprop draws on: PIL's own limit, above which it
refuses to open a file as a decompression bomb (twice ``PIL.Image.MAX_IMAGE_PIXELS``);
about 13,377 x 13,377, or 537 MB as RGB. Checked at ``init``."""

JPEG_SCALES = (8, 4, 2, 1)
"""Reductions libjpeg decodes at directly (PIL ``draft``)."""


# ---------------------------------------------------------------- image files
def file_name_problem(file_name: str) -> str | None:
    """Why ``file_name`` cannot name a file inside the images folder, or None."""
    if "\x00" in file_name:
        return "contains a NUL character"
    rel = posixpath.normpath(file_name).lstrip("/")
    if rel == ".." or rel.startswith("../"):
        return f"{file_name!r} climbs out of the images folder with '..'; give paths inside it"
    return None


def image_candidates(root: str | os.PathLike, file_name: str) -> list[Path]:
    """Where ``file_name`` is looked for under ``root``, in order: a relative name as it is;
    an absolute one that lies inside ``root`` as it is, else re-rooted (``/a/b.jpg`` as
    ``root/a/b.jpg``); then the base name. Never a path outside ``root`` (``..`` climbing
    out is refused by :func:`file_name_problem`)."""
    norm = posixpath.normpath(file_name) if file_name else ""
    if not norm or file_name_problem(file_name) or norm.strip("/") in ("", "."):
        return []
    root = Path(root)
    out = []
    if norm.startswith("/"):
        for top in (os.path.abspath(root), os.path.realpath(root)):
            top = top.rstrip("/") + "/"
            if norm.startswith(top):
                out.append(root / norm[len(top):])
        norm = norm.lstrip("/")
    out += [root / norm, root / posixpath.basename(norm)]
    return list(dict.fromkeys(out))


def recorded_image_root(campaign: dict) -> Path | None:
    """The images folder of a run directory: the one ``crowdprop run --images`` recorded
    (``campaign.json`` crowd ``image_root``), else the one ``init`` found (``sources.images``);
    None when there is none or the folder is gone (logged)."""
    root = None
    for key, field in (("crowd", "image_root"), ("sources", "images")):
        entry = campaign.get(key) if isinstance(campaign, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get(field), str) and entry[field]:
            root = entry[field]
            break
    if root is None:
        return None
    if not Path(root).is_dir():
        log.warning("the images folder %s recorded in the run directory is gone; drawing masks on gray", root)
        return None
    return Path(root)


def find_image_files(root: str | os.PathLike, file_names: list[str], *, stop_at_missing: bool = False
                     ) -> tuple[int, int]:
    """``(found, looked)``: how many of ``file_names`` (non-empty ones) have a file under
    ``root`` (:func:`image_candidates`); with ``stop_at_missing``, stops at the first not found."""
    found = looked = 0
    for name in file_names:
        if not name:
            continue
        looked += 1
        if any(p.is_file() for p in image_candidates(root, name)):
            found += 1
        elif stop_at_missing:
            break
    return found, looked


def check_images(images: pd.DataFrame, source: str | os.PathLike, *, record=None,
                 size_field: str = "height/width") -> None:
    """Refuse images crowdprop cannot draw on: larger than :data:`MAX_IMAGE_PIXELS`, or
    with a ``file_name`` leaving the images folder. Raises :class:`InputError` naming
    ``source``, the record (``record(i, image_id)``; default ``images[i] (id=...)``) and
    the field."""
    if images is None or len(images) == 0:
        return
    record = record or (lambda i, iid: f"images[{i}] (id={iid})")
    ids = images["id"].to_numpy() if "id" in images else np.arange(len(images))
    if "height" in images and "width" in images:
        h = images["height"].to_numpy(np.int64)
        w = images["width"].to_numpy(np.int64)
        big = np.flatnonzero((h > MAX_IMAGE_PIXELS) | (w > MAX_IMAGE_PIXELS) | (h * w > MAX_IMAGE_PIXELS))
        if len(big):
            i = int(big[0])
            raise InputError(source, record(i, ids[i]), size_field,
                             f"image is {w[i]:,} x {h[i]:,} pixels; crowdprop draws masks on images of at most "
                             f"{MAX_IMAGE_PIXELS:,} pixels (PIL's decompression-bomb limit)")
    if "file_name" in images:
        for i, name in enumerate(images["file_name"].tolist()):
            why = file_name_problem(str(name)) if isinstance(name, str) and name else None
            if why:
                raise InputError(source, record(i, ids[i]), "file_name", why)


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

    h, w = mask.shape
    if image is None:
        image = np.full((h, w, 3), GRAY, dtype=np.uint8)
    x0, y0, side = crop_box(bbox, context=context, min_crop=min_crop, shape=(h, w))
    img = Image.fromarray(_cut(image, x0, y0, side, GRAY)).resize((out_px, out_px), Image.Resampling.BILINEAR)
    m = Image.fromarray(_cut(mask.astype(np.uint8) * 255, x0, y0, side, 0)).resize((out_px, out_px),
                                                                              Image.Resampling.NEAREST)
    return draw(np.asarray(m) > 127, np.asarray(img), color=color, alpha=alpha, outline_px=outline_px)


def draw(m: np.ndarray, picture: np.ndarray | None, *, color: tuple[int, int, int] = COLOR, alpha: float = 0.45,
         outline_px: int = 2) -> np.ndarray:
    """The mask ``m`` (``(n, n)`` bool) drawn over ``picture`` (``(n, n, 3)`` uint8, or None
    for gray): translucent fill, solid outline, a dark halo just outside."""
    from scipy import ndimage

    if picture is None:
        picture = np.full(m.shape + (3,), GRAY, dtype=np.uint8)
    edge = m & ~ndimage.binary_erosion(m, iterations=outline_px, border_value=0)
    halo = ndimage.binary_dilation(m, iterations=1) & ~m
    out = np.asarray(picture, dtype=np.float32).copy()
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


def _open(path: str):
    """``PIL.Image.open`` that leaves the size check to us (bounded at init; checked
    against the run's image size before decoding)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


@functools.lru_cache(maxsize=4)
def _read_reduced(path: str, scale: int, height: int, width: int) -> np.ndarray:
    """The RGB image of ``path`` reduced ``scale`` times (about ``ceil(h / scale) x ceil(w / scale)``),
    decoded at that scale for JPEG (PIL ``draft``), decoded once and reduced otherwise.

    Raises :class:`InputError` when the file is not an image of ``width x height`` pixels;
    the size is read from the header, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = _open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise InputError(path, None, "file_name", f"not a readable image: {e}") from None
    with im:
        if im.size != (width, height):
            raise InputError(path, None, "height/width",
                             f"image is {im.size[0]}x{im.size[1]} but its masks are {width}x{height}")
        try:
            if scale > 1 and im.format == "JPEG":
                im.draft("RGB", (-(-width // scale), -(-height // scale)))
                out = im.convert("RGB")
            else:
                out = im.convert("RGB")
                if scale > 1:
                    out = out.reduce(scale)
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(path, None, "file_name", f"not a readable image: {e}") from None
        return np.asarray(out)


def _scale_for(side: int, out_px: int) -> int:
    """The largest JPEG reduction that keeps at least ``out_px`` image pixels across ``side``."""
    return next((s for s in JPEG_SCALES if side // s >= out_px), 1)


def image_crop(path: str | os.PathLike, shape: tuple[int, int], x0: int, y0: int, side: int,
               out_px: int) -> np.ndarray:
    """``(out_px, out_px, 3)`` uint8: the square ``[x0, x0 + side) x [y0, y0 + side)`` of the
    image file (gray outside it), resized bilinearly, decoded at a reduced scale where
    the crop allows (see :func:`_read_reduced`)."""
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    arr = _read_reduced(str(path), _scale_for(side, out_px), h, w)
    fy, fx = arr.shape[0] / h, arr.shape[1] / w  # exact reduction per axis (1 when not reduced)
    rx0, ry0, rsx, rsy = x0 * fx, y0 * fy, side * fx, side * fy
    ix0, iy0 = int(np.floor(rx0)), int(np.floor(ry0))
    iside = max(int(np.ceil(rx0 + rsx)) - ix0, int(np.ceil(ry0 + rsy)) - iy0, 1)
    cut = Image.fromarray(_cut(arr, ix0, iy0, iside, GRAY))
    box = (rx0 - ix0, ry0 - iy0, rx0 - ix0 + rsx, ry0 - iy0 + rsy)
    return np.asarray(cut.resize((out_px, out_px), Image.Resampling.BILINEAR, box=box))


def mask_crop(counts: str, shape: tuple[int, int], x0: int, y0: int, side: int, out_px: int) -> np.ndarray:
    """``(out_px, out_px)`` bool: the mask's pixels at the picture's sample points, the
    square ``[x0, x0 + side)`` resized nearest-neighbour (the pixel under each output
    pixel's centre, as PIL's NEAREST), read from the RLE runs without decoding the mask."""
    h, w = int(shape[0]), int(shape[1])
    runs = rle.runs_many([counts])[0]
    pos = ((2 * np.arange(out_px, dtype=np.int64) + 1) * side) // (2 * out_px)  # floor((i + 0.5) * side / out_px)
    xs, ys = x0 + pos, y0 + pos
    inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
    flat = xs[None, :] * h + ys[:, None]  # column-major pixel index
    ends = np.cumsum(runs)
    k = np.searchsorted(ends, flat, side="right")  # index of the run holding each pixel
    return inside & (k % 2 == 1) & (k < len(runs))


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
    ``expires_s`` seconds (at most 7 days), i.e. the HIT lifetime. A presigned URL
    carries the access key id (``X-Amz-Credential``) and, with temporary credentials,
    the session token (``X-Amz-Security-Token``); never the secret key.

    With ``public_key`` (bytes; ``[mturk] s3_public = true``), each object is named by
    a keyed hash of the picture's name (:meth:`key`, 128 bits: nobody without the key
    can guess another picture's URL) under ``prefix``, which you make publicly
    readable, and workers get plain URLs that carry nothing of the credentials.
    """

    def __init__(self, client, bucket: str, prefix: str, *, expires_s: int, public_key: bytes | None = None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.expires_s = int(min(expires_s, 7 * 86400))
        self.public_key = public_key
        self._uploaded: set[str] = set()
        self._urls: dict[str, str] = {}
        self._unsigned = None

    def key(self, name: str) -> str:
        """The object key of picture ``name``."""
        if self.public_key is None:
            return self.prefix + name
        digest = hmac.new(self.public_key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return f"{self.prefix}{digest}{posixpath.splitext(name)[1]}"

    def has(self, name: str) -> bool:
        return name in self._uploaded

    def put(self, name: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, ContentType=content_type,
                               CacheControl=f"max-age={self.expires_s}")
        self._uploaded.add(name)

    def url(self, name: str) -> str:
        if name not in self._urls:
            params = {"Bucket": self.bucket, "Key": self.key(name)}
            if self.public_key is None:
                self._urls[name] = self.client.generate_presigned_url("get_object", Params=params,
                                                                      ExpiresIn=self.expires_s)
            else:
                self._urls[name] = self._plain_client().generate_presigned_url("get_object", Params=params)
        return self._urls[name]

    def _plain_client(self):
        """A client of the same region that signs nothing: its "presigned" URLs are plain object URLs."""
        if self._unsigned is None:
            import boto3
            import botocore
            from botocore.config import Config as BotoConfig

            self._unsigned = boto3.Session(region_name=self.client.meta.region_name).client(
                "s3", config=BotoConfig(signature_version=botocore.UNSIGNED))
        return self._unsigned


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
                 min_crop: int = 128, fmt: str = "jpeg", source: str | os.PathLike = "images.parquet"):
        self.target = target
        self.files = {} if images is None else dict(zip(images["id"].astype(int), images["file_name"].astype(str)))
        self.image_root = Path(image_root) if image_root else None
        if self.image_root is not None:
            check_images(images, source, record=lambda i, iid: f"image {iid}")
        self.out_px, self.context, self.min_crop, self.fmt = out_px, context, min_crop, fmt
        self._warned = False

    def name(self, row: pd.Series) -> str:
        return f"mask_{int(row['mask_id'])}.{'jpg' if self.fmt == 'jpeg' else 'png'}"

    def image_path(self, row: pd.Series) -> Path | None:
        """The image file of a mask row inside ``image_root``, or None when there is none."""
        file_name = self.files.get(int(row["image_id"]))
        if self.image_root is None or not file_name:
            return None
        path = next((p for p in image_candidates(self.image_root, file_name) if p.is_file()), None)
        if path is None and not self._warned:
            log.warning("image file %s not found under %s; drawing masks on gray", file_name, self.image_root)
            self._warned = True
        return path

    def picture(self, row: pd.Series) -> np.ndarray:
        """The ``(out_px, out_px, 3)`` overlay of one mask row; neither the mask nor the
        image is decoded whole (:func:`mask_crop`, :func:`image_crop`)."""
        shape = (int(row["height"]), int(row["width"]))
        bbox = (row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"])
        x0, y0, side = crop_box(bbox, context=self.context, min_crop=self.min_crop, shape=shape)
        m = mask_crop(row["rle"], shape, x0, y0, side, self.out_px)
        path = self.image_path(row)
        image = None
        if path is not None:
            try:
                image = image_crop(path, shape, x0, y0, side, self.out_px)
            except InputError as e:
                raise InputError(e.file, f"image {int(row['image_id'])}", e.field, e.message) from None
        return draw(m, image)

    def render(self, row: pd.Series) -> bytes:
        """The encoded picture of one mask row."""
        return encode(self.picture(row), self.fmt)

    def url(self, row: pd.Series) -> str:
        """URL of the mask's picture, rendering and storing it first if needed."""
        name = self.name(row)
        if not self.target.has(name):
            self.target.put(name, self.render(row), "image/jpeg" if self.fmt == "jpeg" else "image/png")
        return self.target.url(name)
