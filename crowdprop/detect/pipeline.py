"""The detection stage from a folder of images to the run directory's tables.

:func:`detect_images` lists the images, skips those already recorded in complete
parts, detects the rest shard by shard (``images_per_part`` images, processed in
batches of ``batch_size``, one part written per shard), then merges all parts
into ``masks.parquet``, ``features.npy``, ``images.parquet`` and
``categories.parquet`` (layout in :mod:`crowdprop.detect.store`). The local
engine runs one model in this process; the Ray engine
(:mod:`crowdprop.detect.ray_engine`) runs one model per actor over the same
shards; both write each shard with :func:`crowdprop.detect.shards.process_shard`,
so both produce the same tables.

Memory stays bounded: one shard of results is held at a time, and the merge
streams part by part.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, StateError
from ..io import atomic_write_text
from .images import list_images
from .model import DetectorSpec, resolve_label_map
from .projection import PROJECTION_FILE, PROJECTION_SEED, load_or_create_projection
from .shards import plan_shards, process_shard
from .store import PARTS_DIR, clean_incomplete_parts, done_images, merge_parts

log = logging.getLogger(__name__)

__all__ = ["SETTINGS_FILE", "DetectSummary", "detect_images"]

SETTINGS_FILE = "detect.json"


@dataclass
class DetectSummary:
    """What a call to :func:`detect_images` did.

    Attributes
    ----------
    n_images : int
        Images in the listing (after ``limit``), all of them in the merged tables.
    n_processed : int
        Images detected in this call.
    n_skipped : int
        Images found in parts of earlier calls and not detected again.
    n_masks : int
        Rows of ``masks.parquet``.
    """

    n_images: int
    n_processed: int
    n_skipped: int
    n_masks: int


def _check_settings(run_dir: Path, settings: dict) -> None:
    path = run_dir / SETTINGS_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StateError(f"{path}: unreadable ({e})") from None
        for key in sorted(set(old) | set(settings)):
            if old.get(key) != settings.get(key):
                raise StateError(
                    f"{path}: field '{key}': this run directory was detected with {old.get(key)!r}, "
                    f"now {settings.get(key)!r}; use a new run directory (or delete {run_dir / PARTS_DIR})")
        return
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def detect_images(
    images_dir: str | Path,
    run_dir: str | Path,
    *,
    spec: DetectorSpec = DetectorSpec(),
    device: str = "auto",
    batch_size: int = 2,
    images_per_part: int = 64,
    limit: int | None = None,
    engine: str = "local",
    export_coco: str | Path | None = None,
    num_threads: int | None = None,
    ray_actors: int | None = None,
    ray_cpus_per_actor: int | None = None,
    projection_seed: int = PROJECTION_SEED,
    progress: bool = True,
) -> DetectSummary:
    """Detect masks on a folder of images and write the run directory's tables.

    Parameters
    ----------
    images_dir : path
        Folder searched recursively for .jpg/.jpeg/.png (sorted: image ids follow that order).
    run_dir : path
        Created if missing; an earlier run in it is resumed (same settings required).
    spec : DetectorSpec
        Model, weights, label map, thresholds and input size.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    batch_size : int
        Images per forward pass.
    images_per_part : int
        Images per part file (and per Ray task).
    limit : int, optional
        Only the first ``limit`` images of the sorted listing.
    engine : {"local", "ray"}
    export_coco : path, optional
        Also write the detections as COCO results JSON.
    num_threads : int, optional
        torch CPU threads (local engine); default :func:`~crowdprop.detect.model.default_threads`.
    ray_actors, ray_cpus_per_actor : int, optional
        Ray engine: number of model actors and CPUs each (default: one actor per GPU
        on CUDA, else actors of up to 4 CPUs filling the cluster).
    projection_seed : int
        Seed of the feature projection if the run directory has none yet.
    progress : bool
        Show a tqdm bar (it stays quiet anyway when stderr is not a terminal).

    Returns
    -------
    DetectSummary
    """
    if batch_size < 1:
        raise InputError("--batch-size", None, None, "must be >= 1")
    if images_per_part < 1:
        raise InputError("--images-per-part", None, None, "must be >= 1")
    if limit is not None and limit < 1:
        raise InputError("--limit", None, None, "must be >= 1")
    if engine not in ("local", "ray"):
        raise InputError("--engine", None, None, f"{engine!r}: expected local or ray")
    if not 0.0 <= spec.score_threshold < 1.0:
        raise InputError("--score-threshold", None, None, "must be in [0, 1)")
    run_dir = Path(run_dir)
    listing = list_images(images_dir)
    if limit is not None:
        listing = listing[:limit]
    label_map = resolve_label_map(spec)
    from .model import resolve_device

    device = resolve_device(device) if engine == "local" or device != "auto" else device
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"images": str(Path(images_dir).resolve()), "projection_seed": projection_seed, **spec.settings()}
    _check_settings(run_dir, settings)
    projection = load_or_create_projection(run_dir, seed=projection_seed)
    parts_dir = run_dir / PARTS_DIR
    parts_dir.mkdir(exist_ok=True)
    clean_incomplete_parts(parts_dir)
    done = done_images(parts_dir)
    todo = [(i, f) for i, f in enumerate(listing) if f not in done]
    shards = plan_shards(todo, images_per_part)
    log.info("%d image(s): %d to detect, %d done before", len(listing), len(todo), len(listing) - len(todo))
    if todo:
        if engine == "local":
            _run_local(images_dir, parts_dir, shards, spec=spec, projection=projection, device=device,
                       batch_size=batch_size, num_threads=num_threads, progress=progress)
        else:
            from .ray_engine import run_ray

            run_ray(images_dir, parts_dir, shards, spec=spec, projection_path=run_dir / PROJECTION_FILE,
                    device=device, batch_size=batch_size, actors=ray_actors, cpus_per_actor=ray_cpus_per_actor,
                    progress=progress)
    merged = merge_parts(run_dir, listing, label_map.categories(), export_coco=export_coco)
    return DetectSummary(n_images=merged.n_images, n_processed=len(todo), n_skipped=len(listing) - len(todo),
                         n_masks=merged.n_masks)


def _run_local(images_dir, parts_dir, shards, *, spec, projection, device, batch_size, num_threads, progress):
    from tqdm.auto import tqdm

    from .model import build_detector, torch_threads

    with torch_threads(num_threads):
        detector = build_detector(spec, projection=projection, device=device)
        with tqdm(total=sum(len(s) for s in shards), unit="img", desc="detect",
                  disable=None if progress else True) as bar:
            for shard in shards:
                process_shard(detector, images_dir, parts_dir, shard, batch_size=batch_size, on_batch=bar.update)
        detector.close()
