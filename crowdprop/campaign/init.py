"""Creating a run directory: validate every input first, write into a temporary
folder, build the cluster trees, then rename into place. A failure at any point
leaves RUN_DIR as it was."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .. import config as config_mod
from ..errors import InputError, StateError
from ..hits.images import check_images, find_image_files
from ..io import atomic_write_text
from ..masks import load_ground_truth
from ..masks.formats import read_predictions
from ..policy.controller import predicted_quality
from .store import RunDir
from .tables import SCHEMA_VERSION

log = logging.getLogger(__name__)

GOLD_POOL_SIZE = 200
"""Replay: size of the gold pool drawn from ground truth (balanced yes/no)."""

IMAGES_NEXT_TO_GT = "images"
"""Without ``--images``, a folder of this name next to the ground-truth file is the run's images
folder when it holds every image the ground truth names (the shipped sample's layout)."""


def campaign_id(crowd: dict | None, seed: int) -> str:
    """12 characters that prefix every HIT token of the campaign.

    Random for real crowds (tokens must not collide across campaigns on one MTurk
    account); derived from the seed for replays, so two replays with the same seed
    ask the same HITs and get the same simulated answers."""
    if crowd and crowd.get("kind") in ("simulated", "mturk-local"):
        return "rp" + hashlib.blake2b(f"replay-{seed}".encode(), digest_size=5).hexdigest()
    return uuid.uuid4().hex[:12]


def _check_target(run_dir: Path) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise StateError(f"{run_dir}: already exists and is not empty; choose a new run directory")


def replay_gold_pool(masks: pd.DataFrame, correct_iou: float, rng: np.random.Generator,
                     size: int = GOLD_POOL_SIZE) -> pd.DataFrame:
    """Unambiguous golds from ground truth: clearly right (IoU >= 0.85 and above the bar)
    and clearly wrong (IoU < 0.5) masks, half and half."""
    iou = masks["gt_iou"].to_numpy(np.float64)
    yes = np.flatnonzero((iou > correct_iou) & (iou >= 0.85))
    no = np.flatnonzero(iou < 0.5)
    half = size // 2
    pick_yes = np.sort(rng.choice(yes, min(half, len(yes)), replace=False)) if len(yes) else yes
    pick_no = np.sort(rng.choice(no, min(half, len(no)), replace=False)) if len(no) else no
    return pd.DataFrame({"mask_row": np.concatenate([pick_yes, pick_no]).astype(np.int64),
                         "label": np.concatenate([np.ones(len(pick_yes)), np.zeros(len(pick_no))]).astype(np.int64)})


def resolve_image_root(images: pd.DataFrame | None, folder: str | os.PathLike | None, *,
                       gt: str | os.PathLike | None) -> str | None:
    """The folder holding the images' files (by ``file_name``) that the run records, absolute.

    ``folder`` (``--images``) must be a folder holding at least one of them (a one-line
    :class:`InputError` otherwise; those missing are drawn on gray, logged). Without it, the
    folder :data:`IMAGES_NEXT_TO_GT` next to ``gt`` when it holds all of them; else None
    (pictures of masks on a gray canvas)."""
    names = [] if images is None or "file_name" not in images else \
        [n for n in images["file_name"].fillna("").astype(str).tolist() if n]
    if folder is not None:
        if not Path(folder).is_dir():
            raise InputError(folder, None, "--images", "not a folder (the one holding the images' files)")
        if not names:
            raise InputError("command line", None, "--images", "needs --gt: the ground truth's image file_name "
                             "entries name the files in the folder")
        found, looked = find_image_files(folder, names)
        if not found:
            raise InputError(folder, None, "--images", f"holds none of the {looked} images of {gt} "
                             f"(looked for {names[0]!r}, by file_name)")
        if found < looked:
            log.warning("%s holds %d of the %d images of %s; the masks of the others are drawn on gray",
                        folder, found, looked, gt)
        return str(Path(folder).resolve())
    if gt is None or not names:
        return None
    near = Path(gt).parent / IMAGES_NEXT_TO_GT
    if near.is_dir() and find_image_files(near, names, stop_at_missing=True) == (len(names), len(names)):
        log.info("images: %s (next to %s, holding all %d of its images)", near, gt, len(names))
        return str(near.resolve())
    return None


def build_trees(run: RunDir, *, progress: bool | None = None, masks: pd.DataFrame | None = None) -> None:
    """Featurise the masks (or take the given features) and build the per-class forest
    (one task per class on the active engine, :mod:`crowdprop.engine`).

    ``progress``: True or None show bars on a terminal only; False never. ``masks``: the
    run's masks table when the caller has it (else it is read from the run directory)."""
    from ..engine import stage
    from ..features import clustering_embedding, shape_features
    from ..tree.build import build_forest

    cfg = run.config
    masks = run.masks if masks is None else masks
    fpath = run.path / "features.npy"
    with stage(None, "features"):
        if fpath.exists():
            feats = np.load(fpath, mmap_mode="r")
        else:
            feats = shape_features(masks, grid=cfg.features.grid, progress=progress is not False)
        quality = predicted_quality(masks, cfg.policy.quality)
        rng = np.random.default_rng([cfg.campaign.seed, 1])
        emb = clustering_embedding(np.asarray(feats, dtype=np.float32), quality,
                                   quality_weight=cfg.features.quality_weight, pca_dims=cfg.features.pca_dims,
                                   rng=rng)
        del feats
    with stage(None, "trees"):
        forest = build_forest(masks["category_id"].to_numpy(np.int64), emb, exact_max=cfg.tree.exact_max,
                              micro_size=cfg.tree.micro_size, rng=rng, progress=progress is not False)
        del emb
        run.write_forest(forest)
    log.info("built %d trees with %d nodes over %d masks", len(forest.roots), forest.n_nodes, len(masks))


def init_run(run_dir: str | os.PathLike, *, predictions: str | os.PathLike, gt: str | os.PathLike | None = None,
             features: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None,
             crowd: dict | None = None, seed: int | None = None, progress: bool | None = None,
             category: str | None = None, category_map: str | os.PathLike | None = None,
             images_dir: str | os.PathLike | None = None) -> RunDir:
    """Validate the inputs and create ``run_dir``. Returns the new run directory.

    ``predictions`` in any format of :mod:`crowdprop.masks.formats`; ``category`` or
    ``category_map`` give Segment Anything masks their class. ``images_dir``: the folder of the
    ground truth's image files, recorded as ``campaign.json`` ``sources.images`` so that
    worker pages and report.html draw masks on the photos (see :func:`resolve_image_root`; found
    next to ``gt`` when not given)."""
    run_dir = Path(run_dir)
    _check_target(run_dir)
    if images_dir is not None and not Path(images_dir).is_dir():  # before reading anything large
        raise InputError(images_dir, None, "--images", "not a folder (the one holding the images' files)")
    cfg = config_mod.load(config_path)
    if seed is not None:
        cfg.campaign.seed = int(seed)
    gt_obj = load_ground_truth(gt) if gt is not None else None
    if gt_obj is not None and gt is not None:
        check_images(gt_obj.images, gt)
    masks, named = read_predictions(predictions, gt_obj, category=category, category_map=category_map)
    feats = None
    if features is not None:
        from ..features import load_features

        feats = load_features(features, masks)
    if crowd and crowd.get("kind") in ("simulated", "mturk-local") and gt_obj is None:
        raise InputError(predictions, None, None, "a replay needs ground truth: pass --gt")
    predicted_quality(masks, cfg.policy.quality)  # fails early if the quality source is missing

    if gt_obj is not None:
        images, categories = gt_obj.images, gt_obj.categories
        gt_ann = gt_obj.annotations
    else:
        im = masks.groupby("image_id")[["height", "width"]].first().reset_index()
        images = pd.DataFrame({"id": im["image_id"], "file_name": "", "height": im["height"], "width": im["width"],
                               "coco_url": ""})
        check_images(images, predictions, record=lambda i, iid: f"image_id={iid}", size_field="segmentation.size")
        cats = np.unique(masks["category_id"])
        categories = named if named is not None else pd.DataFrame(
            {"id": cats, "name": [f"class {c}" for c in cats], "supercategory": ""})
        gt_ann = None
    root = resolve_image_root(images if gt_obj is not None else None, images_dir, gt=gt)

    tmp = run_dir.parent / f".{run_dir.name}.init-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        atomic_write_text(tmp / "config.json", cfg.to_json())
        campaign = {
            "campaign_id": campaign_id(crowd, cfg.campaign.seed),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "crowd": crowd or {"kind": "mturk", "target": "sandbox"},
            "sources": {"predictions": str(predictions), "gt": str(gt) if gt else None,
                        "features": str(features) if features else None,
                        "config": str(config_path) if config_path else None,
                        "images": root},
            "version": __version__,
            "schema_version": SCHEMA_VERSION,
        }
        atomic_write_text(tmp / "campaign.json", json.dumps(campaign, indent=2, sort_keys=True))
        new = RunDir(tmp)
        new.write_table("masks", masks)
        new.write_table("images", images)
        new.write_table("categories", categories)
        if gt_ann is not None:
            new.write_table("gt", gt_ann)
            golds = replay_gold_pool(masks, cfg.campaign.correct_iou, np.random.default_rng([cfg.campaign.seed, 2]))
            new.write_table("golds", golds)
        if feats is not None:
            np.save(tmp / "features.npy", np.asarray(feats, dtype=np.float32))
        build_trees(new, progress=progress, masks=masks)
        n = len(masks)  # every mask open (labels.parquet, rewritten after each round commit)
        new.write_labels(np.full(n, -1), np.zeros(n, np.int8), np.zeros(n, np.int64))
        if run_dir.exists():
            run_dir.rmdir()
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("created %s with %d masks", run_dir, len(masks))
    return RunDir(run_dir)
