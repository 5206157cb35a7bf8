"""Build the crowd backend a run directory asks for (``campaign.json["crowd"]``): kind -> backend.

Crowd kinds
-----------
``{"kind": "simulated"}``
    :class:`~crowdprop.crowd.simulated.SimulatedCrowd`, in process, no HTTP.
``{"kind": "mturk-local", "images": "skip" | "render"}``
    A local MTurk-compatible endpoint (:mod:`crowdprop.mturk_local`) started in
    this process on 127.0.0.1 with simulated workers answering from ground truth,
    and :class:`~crowdprop.crowd.mturk.MTurkBackend` talking to it through boto3
    (dummy credentials ``local``). The endpoint lives as long as the process: a
    round that was in progress when a previous process stopped is redone from its
    start (its HITs were on the endpoint that stopped; the simulated answers are
    a function of the HIT token and the question, so the round comes out the same).
    ``images``: simulated workers never look at the pictures, so ``skip`` (the
    replay default) puts the picture URLs on the page without drawing them;
    ``render`` draws them into ``RUN_DIR/hit_images`` (served at ``URL/images/``).
``{"kind": "mturk", "target": "sandbox" | "production" | "local", "endpoint_url": URL?, "profile": NAME?,
"image_root": DIR?}``
    Amazon Mechanical Turk (or the MTurk-compatible endpoint at ``endpoint_url``)
    through :class:`~crowdprop.crowd.mturk.MTurkBackend`; credentials come from
    the standard AWS chain only and are never read, logged or stored here.

The simulator (:mod:`crowdprop.crowd.simulated`, :mod:`crowdprop.replay.workers`,
:mod:`crowdprop.mturk_local`) is imported only here, and only for the kinds that use it.
"""
from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import InputError, StateError
from . import mturk as _mturk
from .base import CrowdBackend, CrowdKind
from .qualification import qualification_results, qualification_test, qualification_test_golds, truth_of
from .resume import MTurkCrowd, journal_rounds
from .targets import Target, crowd_kind, image_url_key, record_target, resolve_target

if TYPE_CHECKING:
    from ..campaign.store import RunDir
    from .simulated import SimulatedCrowd

log = logging.getLogger(__name__)

IMAGE_MODES = ("skip", "render")
HIT_IMAGES = "hit_images"
"""Folder of RUN_DIR holding the pictures shown on worker pages (local targets)."""


def simulated_backend(run: RunDir) -> SimulatedCrowd:
    """The in-process simulated crowd of ``run`` (workers who fail the qualification test kept out)."""
    from ..quality import passes_qualification
    from ..replay.workers import WorkerPool
    from .simulated import SimulatedCrowd

    cfg = run.config
    pool = WorkerPool.build(cfg.simulation, cfg.campaign.seed)
    q = cfg.quality
    failed = {w for w, (n, right) in qualification_results(run, pool).items()
              if not passes_qualification(n, right, q)}
    return SimulatedCrowd(truth_of(run), pool, blocked=failed)



def quiet_botocore() -> None:
    """botocore's DEBUG records print request headers (the access key id among them)."""
    for name in ("botocore", "boto3", "urllib3"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.INFO:
            lg.setLevel(logging.INFO)


def _class_names(run: RunDir) -> dict[int, str]:
    cats = run.table("categories")
    if cats is None:
        return {}
    return {int(i): str(n) for i, n in zip(cats["id"], cats["name"])}


def _guard(run: RunDir):
    from ..money import cap_cents

    return _mturk.BudgetGuard(cap_cents(run.config.campaign.budget_usd))


def _page(run: RunDir, image_url: Callable, section) -> object:
    from ..hits.render import PageRenderer

    return PageRenderer(image_url, _class_names(run), masks=run.masks, frame_height=section.frame_height)


def local_client(endpoint_url: str):
    """A boto3 MTurk client for a local endpoint with dummy credentials (the AWS chain is not read)."""
    import boto3
    from botocore.config import Config as BotoConfig

    quiet_botocore()
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    return session.client("mturk", endpoint_url=endpoint_url, config=BotoConfig(
        retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60,
        user_agent_extra="crowdprop"))


# ------------------------------------------------------------------------- local endpoint
def discard_stale_journal(run: RunDir) -> list[int]:
    """Drop what the journal of a round in progress says about an endpoint that is gone.

    Returns the rounds concerned. Only for an in-process local endpoint: nothing
    there outlives its process, so the round's HITs are published again from its
    frozen plan (the same questions and tokens; the simulated answers follow the
    questions), and a round that had not frozen its plan is planned again.
    """
    from ..campaign.roundplan import CREW_FILES, frozen

    rounds = journal_rounds(run)
    for r in rounds:
        if frozen(run, r):
            for name in CREW_FILES:
                (run.journal_dir(r) / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(run.journal_dir(r), ignore_errors=True)
    if rounds:
        log.info("round(s) %s were in progress on a local endpoint that stopped with its process; "
                 "their HITs are published again as planned", ", ".join(map(str, rounds)))
    return rounds


class _SessionLocalMTurk:
    """Factory of LocalMTurk whose ids differ between processes of one campaign.

    LocalMTurk numbers HITs and assignments from 0 in every process; a campaign
    continued by a second process would reuse the ids of its first round. The
    ids are salted with the campaign id and the first round this process runs.
    """

    @staticmethod
    def build(truth, pool, *, salt: str, **kw):
        from ..mturk_local import LocalMTurk

        class SaltedLocalMTurk(LocalMTurk):
            def _new_id(self, kind: str, length: int = 30) -> str:
                return super()._new_id(f"{kind}\x1f{salt}", length)

        return SaltedLocalMTurk(truth, pool, **kw)


def local_endpoint_backend(run: RunDir, *, images: str | None = None, simulate: bool = True,
                           unanswered_share: float = 0.0, work_delay: float = 0.0, clock=None,
                           retry_wait_s: float = 0.05, sleep: Callable[[float], None] | None = None) -> MTurkCrowd:
    """Start a local MTurk endpoint for ``run`` (127.0.0.1, a free port) and an MTurk backend on it.

    Parameters
    ----------
    run : RunDir
        Needs ground truth (``gt_iou``); truth is ``gt_iou > campaign.correct_iou``.
    images : {"skip", "render"} or None
        Draw the overlay pictures (``render``) or only link them (``skip``);
        None: the run's ``crowd.images`` (default ``skip``).
    simulate, unanswered_share, work_delay, clock
        Passed to :class:`~crowdprop.mturk_local.LocalMTurk` (``simulate=False``:
        HITs wait for a browser).

    Returns
    -------
    MTurkCrowd
        ``.handle.url`` is the endpoint, ``.local`` the LocalMTurk (its ledger);
        ``close()`` stops the endpoint.
    """
    import time

    from ..hits.images import LocalFolderTarget, OverlayStore, recorded_image_root
    from ..mturk_local import serve, truth_from_masks
    from ..replay.workers import WorkerPool

    cfg = run.config
    images = images or run.campaign.get("crowd", {}).get("images", "skip")
    if images not in IMAGE_MODES:
        raise StateError(f"{run.path}/campaign.json: crowd images '{images}' must be one of {', '.join(IMAGE_MODES)}")
    masks = run.masks
    if not np.isfinite(masks["gt_iou"].to_numpy(np.float64)).any():
        raise StateError(f"{run.path}: a local endpoint with simulated workers needs ground truth, "
                         "and this run has none")
    truth = truth_from_masks(masks, correct_iou=cfg.campaign.correct_iou, source=str(run.path / "masks.parquet"))
    pool = WorkerPool.build(cfg.simulation, cfg.campaign.seed)
    discard_stale_journal(run)
    rounds = run.rounds()
    salt = f"{run.campaign.get('campaign_id', '')}:{(rounds[-1] + 1) if rounds else 1}"
    images_dir = run.path / HIT_IMAGES
    images_dir.mkdir(exist_ok=True)
    local = _SessionLocalMTurk.build(truth, pool, salt=salt, images_dir=images_dir, clock=clock,
                                     balance=max(10000.0, cfg.campaign.budget_usd), work_delay=work_delay,
                                     simulate=simulate, unanswered_share=unanswered_share)
    handle = serve(local)
    try:
        client = local_client(handle.url)
        store = OverlayStore(LocalFolderTarget(images_dir, handle.url + "/images"), images=run.table("images"),
                             image_root=recorded_image_root(run.campaign))
        url = store.url if images == "render" else (lambda row: store.target.url(store.name(row)))
        section = cfg.mturk
        test = qualification_test(run, duration_s=section.test_duration_s) if simulate else None
        if not simulate and qualification_test_golds(run).shape[0]:
            log.info("no qualification test on a local endpoint without simulated workers (a browser does the HITs)")
        backend = _mturk.MTurkBackend(client, config=cfg, mturk=section, page=_page(run, url, section), target="local",
                                      masks=masks, guard=_guard(run), retry_wait_s=retry_wait_s,
                                      retry_max_wait_s=max(retry_wait_s, 1.0), sleep=sleep or time.sleep,
                                      campaign_id=run.campaign.get("campaign_id"), test=test)
    except BaseException:
        handle.stop()
        raise
    log.info("local MTurk endpoint for %s at %s", run.path, handle.url)
    return MTurkCrowd(backend, run, handle=handle, reconcile=False)



def _image_target(run: RunDir, where: Target, section, client_profile: str | None):
    from ..hits.images import LocalFolderTarget, S3Target, s3_client

    if section.s3_bucket:
        return S3Target(s3_client(region=section.region, profile=client_profile), section.s3_bucket,
                        section.s3_prefix, expires_s=section.lifetime_s,
                        public_key=image_url_key(run) if section.s3_public else None)
    folder = run.path / HIT_IMAGES
    if section.image_base_url:
        return LocalFolderTarget(folder, section.image_base_url)
    if where.endpoint_url:
        return LocalFolderTarget(folder, where.endpoint_url.rstrip("/") + "/images")
    src = (run.campaign.get("sources") or {}).get("config")
    made = f"; this run's config.json was made from {src} at init" if src else ""
    raise InputError(run.path / "config.json", "[mturk]", "s3_bucket",
                     "workers need to see the pictures: set [mturk] s3_bucket (uploaded, presigned URLs) or "
                     f"image_base_url (RUN_DIR/hit_images served at that https URL){made}")


def mturk_backend(run: RunDir, where: Target, *, client=None, retry_wait_s: float = 1.0,
                  sleep: Callable[[float], None] | None = None) -> MTurkCrowd:
    """An :class:`MTurkCrowd` for ``where`` (connects with the AWS chain unless ``client`` is given)."""
    import time

    from ..hits.images import OverlayStore, recorded_image_root

    cfg = run.config
    section = cfg.mturk
    store_target = _image_target(run, where, section, where.profile)
    if client is None:
        quiet_botocore()
        client = _mturk.connect(None if where.target == "local" else where.target, endpoint_url=where.endpoint_url,
                                profile=where.profile, region="us-east-1")
    store = OverlayStore(store_target, images=run.table("images"),
                         image_root=where.image_root or recorded_image_root(run.campaign))
    backend = _mturk.MTurkBackend(client, config=cfg, mturk=section, page=_page(run, store.url, section),
                                  target=where.target, masks=run.masks, guard=_guard(run),
                                  retry_wait_s=retry_wait_s, retry_max_wait_s=max(retry_wait_s, 60.0),
                                  sleep=sleep or time.sleep, campaign_id=run.campaign.get("campaign_id"),
                                  test=qualification_test(run, duration_s=section.test_duration_s))
    return MTurkCrowd(backend, run, reconcile=True)


def make_backend(run: RunDir, *, target: str | None = None, endpoint_url: str | None = None,
                 profile: str | None = None, image_root: str | None = None) -> CrowdBackend:
    """The crowd backend of ``run`` (see the module docstring); close it when done."""
    kind = crowd_kind(run)
    if kind != CrowdKind.MTURK and any(v is not None for v in (target, endpoint_url, profile, image_root)):
        raise StateError(f"{run.path}: its crowd is '{kind}'; --target/--endpoint-url/--profile/--images "
                         "apply to MTurk runs only (crowdprop init --crowd mturk)")
    if kind == CrowdKind.SIMULATED:
        return simulated_backend(run)
    if kind == CrowdKind.MTURK_LOCAL:
        return local_endpoint_backend(run)
    where = resolve_target(run, target=target, endpoint_url=endpoint_url, profile=profile, image_root=image_root)
    crowd = mturk_backend(run, where)
    record_target(run, where)
    return crowd
