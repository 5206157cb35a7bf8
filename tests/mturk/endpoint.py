"""A local MTurk endpoint with a real boto3 client and an MTurkBackend wired to it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crowdprop.config import Config, SimulationSection
from crowdprop.crowd.mturk import MTurkBackend, MTurkSection, connect
from crowdprop.crowd.spend import BudgetGuard
from crowdprop.hits.images import LocalFolderTarget, OverlayStore
from crowdprop.hits.render import PageRenderer
from crowdprop.mturk_local import LocalMTurk, serve
from crowdprop.mturk_local.faults import Fault
from crowdprop.replay.workers import WorkerPool

from .conftest import CLASS_NAMES


class ScriptedFaults:
    """Stands in for the endpoint's fault injector: the listed faults, then none."""

    def __init__(self, faults: list[Fault | None]):
        self.script = list(faults)
        self.counts = {"requests": 0}

    def draw(self) -> Fault | None:
        self.counts["requests"] += 1
        return self.script.pop(0) if self.script else None


@dataclass
class Rig:
    handle: object
    local: LocalMTurk
    pool: WorkerPool
    truth: dict[int, bool]
    masks: pd.DataFrame
    client: object
    page: PageRenderer
    images_dir: Path

    def backend(self, *, guard: BudgetGuard | None = None, **kw) -> MTurkBackend:
        return MTurkBackend(self.client, config=Config(), mturk=MTurkSection(), page=self.page, target="local",
                            masks=self.masks, guard=guard, retry_wait_s=0.001, retry_max_wait_s=0.01, **kw)

    def ledger(self) -> dict:
        return self.local.ledger(entries=False)


def start(tmp_path: Path, masks: pd.DataFrame, images: pd.DataFrame, image_root: Path, *,
          simulate: bool = True, workers: int = 12) -> Rig:
    truth = {int(m): bool(i % 3 != 0) for i, m in enumerate(masks["mask_id"])}
    pool = WorkerPool.build(SimulationSection(workers=workers, accuracy=0.9), seed=3)
    images_dir = tmp_path / "images"
    local = LocalMTurk(truth, pool, images_dir=images_dir, simulate=simulate)
    handle = serve(local)
    client = connect(None, endpoint_url=handle.url)
    store = OverlayStore(LocalFolderTarget(images_dir, handle.url + "/images"), images=images, image_root=image_root)
    page = PageRenderer(store.url, CLASS_NAMES, masks=masks)
    return Rig(handle, local, pool, truth, masks, client, page, images_dir)
