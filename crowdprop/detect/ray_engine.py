"""The detection stage over Ray Data: the same shards and parts, one model per actor.

Each row of the Ray dataset is one shard (a list of ``(index, file_name)``
pairs, see :func:`crowdprop.detect.shards.plan_shards`), one shard per block.
``map_batches`` with a class starts a pool of :class:`ShardWorker` actors, each
holding one model (one GPU per actor on CUDA, else ``cpus_per_actor`` CPUs and as
many torch threads); an actor reads its shard's images, detects in batches of
``batch_size`` exactly as the local engine does, and writes the shard's part into
``RUN_DIR/detections``. The driver only counts finished images, and
:func:`crowdprop.detect.store.merge_parts` merges the parts afterwards, so the
tables are the same as with the local engine.

Ray is started with ``ray.init()`` when no cluster is connected (a local
single-machine cluster; set ``RAY_ADDRESS`` to use a running cluster whose
workers see the same file system).
"""
from __future__ import annotations

import json
import logging

import numpy as np

from ..errors import CrowdpropError, InputError
from .shards import process_shard

log = logging.getLogger(__name__)

__all__ = ["ShardWorker", "run_ray"]


class ShardWorker:
    """A Ray Data actor: one detector, called with batches of shards."""

    def __init__(self, *, spec, device: str, images_dir: str, parts_dir: str, projection_path: str,
                 batch_size: int, num_threads: int | None):
        import torch

        from .model import build_detector

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.detector = build_detector(spec, projection=np.load(projection_path, allow_pickle=False), device=device)
        self.images_dir = images_dir
        self.parts_dir = parts_dir
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        first, n_images, n_masks, errors = [], [], [], []
        for text in batch["shard"]:
            shard = [(int(i), str(f)) for i, f in json.loads(str(text))]
            try:
                ni, nm = process_shard(self.detector, self.images_dir, self.parts_dir, shard,
                                       batch_size=self.batch_size)
                err = ""
            except CrowdpropError as e:  # sent back as data: the driver raises it as it was
                ni, nm, err = 0, 0, _error_to_json(e)
            first.append(shard[0][0])
            n_images.append(ni)
            n_masks.append(nm)
            errors.append(err)
        return {"first": np.asarray(first, np.int64), "n_images": np.asarray(n_images, np.int64),
                "n_masks": np.asarray(n_masks, np.int64), "error": np.asarray(errors, dtype=object)}


def _error_to_json(e: CrowdpropError) -> str:
    if isinstance(e, InputError):
        return json.dumps({"type": "InputError", "args": [e.file, e.record, e.field, e.message]})
    return json.dumps({"type": type(e).__name__, "args": [str(e)]})


def _error_from_json(text: str) -> CrowdpropError:
    from .. import errors

    d = json.loads(text)
    cls = getattr(errors, d["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, CrowdpropError)) or cls is errors.MissingExtra:
        return errors.StateError(" ".join(map(str, d["args"])))
    return cls(*d["args"])


def _crowdprop_cause(e: BaseException) -> CrowdpropError | None:
    """The innermost crowdprop error in an exception's cause chain (Ray wraps actor errors)."""
    found, seen = None, set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, CrowdpropError) and type(cur).__module__.startswith("crowdprop"):
            found = cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    return found


def run_ray(images_dir, parts_dir, shards, *, spec, projection_path, device: str = "auto", batch_size: int = 2,
            actors: int | None = None, cpus_per_actor: int | None = None, progress: bool = True) -> int:
    """Detect on ``shards`` with a pool of Ray actors; return the number of images done.

    Parameters
    ----------
    images_dir, parts_dir : path
    shards : list of list of (int, str)
    spec : crowdprop.detect.model.DetectorSpec
    projection_path : path
        ``RUN_DIR/projection.npy`` (actors load it).
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: CUDA when the Ray cluster has GPUs.
    batch_size : int
    actors, cpus_per_actor : int, optional
    progress : bool
    """
    import ray
    from tqdm.auto import tqdm

    from .model import build_detector

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    res = ray.cluster_resources()
    n_gpus = int(res.get("GPU", 0))
    n_cpus = max(1, int(res.get("CPU", 1)))
    if device == "auto":
        device = "cuda" if n_gpus else "cpu"
    if device.startswith("cuda"):
        if not n_gpus:
            raise InputError("--device", None, None, "cuda requested but the Ray cluster has no GPU")
        num_gpus, num_cpus = 1, 1
        actors = actors or n_gpus
        threads = 1
    else:
        num_gpus = 0
        num_cpus = cpus_per_actor or min(4, n_cpus)
        actors = actors or max(1, n_cpus // num_cpus)
        threads = num_cpus
    actors = max(1, min(actors, len(shards)))
    # Fail fast on a bad checkpoint (and fetch DEFAULT weights once) before any actor starts.
    build_detector(spec, projection=np.load(projection_path, allow_pickle=False), device="cpu").close()

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"shard": json.dumps(s)} for s in shards]
    ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardWorker,
        batch_size=1,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        fn_constructor_kwargs=dict(spec=spec, device=device, images_dir=str(images_dir), parts_dir=str(parts_dir),
                                   projection_path=str(projection_path), batch_size=batch_size,
                                   num_threads=threads),
    )
    log.info("ray: %d shard(s) on %d actor(s) (%s, %s CPU each)", len(shards), actors, device, num_cpus)
    done = 0
    try:
        with tqdm(total=sum(len(s) for s in shards), unit="img", desc="detect (ray)",
                  disable=None if progress else True) as bar:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for err in out["error"]:
                    if err:
                        raise _error_from_json(str(err))
                k = int(np.sum(out["n_images"]))
                done += k
                bar.update(k)
    except CrowdpropError:
        raise
    except Exception as e:  # Ray wraps errors raised in actors
        cause = _crowdprop_cause(e)
        if cause is not None:
            raise cause from None
        raise
    return done
