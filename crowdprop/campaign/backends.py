"""Build the crowd backend a run directory asks for (``campaign.json["crowd"]``).

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
``{"kind": "mturk", "target": "sandbox" | "production" | "local", "endpoint_url": URL?, "profile": NAME?, "image_root": DIR?}``
    Amazon Mechanical Turk (or the MTurk-compatible endpoint at ``endpoint_url``)
    through :class:`~crowdprop.crowd.mturk.MTurkBackend`; credentials come from
    the standard AWS chain only and are never read, logged or stored here.

Resuming on MTurk
-----------------
MTurk remembers a ``UniqueRequestToken`` for 24 hours only. :class:`MTurkCrowd`
therefore never sends CreateHIT for a token whose HIT id is in the journal of
the round in progress, and looks up tokens that were journaled before a crash
but have no HIT id yet in ListHITs (by ``RequesterAnnotation``) before
publishing them: a resumed round never creates a second HIT, however old it is.
A token names what its HIT asks (:func:`crowdprop.hits.batching.content_token`),
and a HIT found under a token (journal, ListHITs, or MTurk's ``HitAlreadyExists``)
is adopted only after GetHIT shows it holds the same questions, reward and
number of assignments (:meth:`~crowdprop.crowd.mturk.MTurkBackend.verify`).

Quality control on MTurk
------------------------
Every MTurk crowd (local endpoint included) gets the campaign qualifications of
:class:`~crowdprop.crowd.mturk.MTurkBackend`, named after the campaign id and
found again by name in a later process: a soft block is a qualification the
campaign's HIT types exclude (``DoesNotExist``), and, when ``[quality]
qualification_size > 0`` and the gold pool is not empty, the qualification test
(:func:`qualification_test`: the same golds as the in-process replay's
:func:`qualification_results`) is a qualification type with an answer key that
the HIT types require. On a local endpoint the simulated workers take that test
and are graded exactly as :func:`qualification_results` scores them, so a replay
keeps the same workers out through either crowd. A local endpoint without
simulated workers (a browser does the HITs) has no test.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..crowd import mturk as _mturk
from ..crowd.base import Assignment, HitRequest
from ..crowd.simulated import SimulatedCrowd
from ..errors import InputError, StateError
from ..replay.workers import WorkerPool
from .store import RunDir

log = logging.getLogger(__name__)

TARGETS = ("sandbox", "production", "local")
IMAGE_MODES = ("skip", "render")
HIT_IMAGES = "hit_images"
"""Folder of RUN_DIR holding the pictures shown on worker pages (local targets)."""


def truth_of(run: RunDir) -> np.ndarray:
    """Replay truth per mask row: IoU with the best same-class ground truth above ``correct_iou``."""
    iou = run.masks["gt_iou"].to_numpy(np.float64)
    if not np.isfinite(iou).any():
        raise StateError(f"{run.path}: a simulated crowd needs ground truth, and this run has none")
    return iou > run.config.campaign.correct_iou


def qualification_test_golds(run: RunDir) -> pd.DataFrame:
    """The golds of the campaign's qualification test, in test order.

    ``[quality] qualification_size`` golds (all of them when the pool is
    smaller) drawn once from the gold pool with a generator seeded by the
    campaign seed; empty when the test is off or there are no golds.

    Returns
    -------
    DataFrame with columns ``mask_row``, ``mask_id``, ``label`` (int, 1 = correct), (n,)
    """
    from ..replay.workers import rng_for

    q = run.config.quality
    golds = run.golds
    empty = pd.DataFrame({"mask_row": pd.Series(dtype=np.int64), "mask_id": pd.Series(dtype=np.int64),
                          "label": pd.Series(dtype=np.int64)})
    if q.qualification_size <= 0 or len(golds) == 0:
        return empty
    rng = rng_for("qualification-test", run.config.campaign.seed)
    take = min(q.qualification_size, len(golds))
    test = golds.iloc[np.sort(rng.choice(len(golds), take, replace=False))]
    rows = test["mask_row"].to_numpy(np.int64)
    return pd.DataFrame({"mask_row": rows, "mask_id": run.masks["mask_id"].to_numpy(np.int64)[rows],
                         "label": test["label"].to_numpy(np.int64)})


def qualification_test(run: RunDir, *, duration_s: int = 1800) -> _mturk.QualificationTest | None:
    """The campaign's :class:`~crowdprop.crowd.mturk.QualificationTest` for MTurk (None when off)."""
    golds = qualification_test_golds(run)
    if len(golds) == 0:
        return None
    return _mturk.QualificationTest(mask_rows=tuple(int(r) for r in golds["mask_row"]),
                                    labels=tuple(bool(x) for x in golds["label"]),
                                    pass_share=run.config.quality.qualification_pass,
                                    duration_s=duration_s)


def qualification_results(run: RunDir, pool: WorkerPool) -> dict[str, tuple[int, int]]:
    """Replay of the qualification test: worker id -> (questions, answered right).

    Every worker takes the same test (:func:`qualification_test_golds`, like an
    MTurk qualification type with an answer key) before their first HIT: each
    question is answered ``pool.answer(w, "qualification:mask-<mask_id>", truth)``
    and scored against the gold's label, exactly as the local MTurk endpoint
    grades the test of :func:`qualification_test`. Empty when the test is off
    or there are no golds.
    """
    test = qualification_test_golds(run)
    if len(test) == 0:
        return {}
    truth = truth_of(run)
    keys = [_mturk.qualification_answer_key(_mturk.qualification_question_id(m)) for m in test["mask_id"]]
    out = {}
    for w, wid in enumerate(pool.worker_ids):
        right = sum(pool.answer(w, k, bool(truth[r])) == bool(lab)
                    for k, r, lab in zip(keys, test["mask_row"], test["label"]))
        out[wid] = (len(test), int(right))
    return out


def simulated_backend(run: RunDir) -> SimulatedCrowd:
    from ..quality import passes_qualification

    cfg = run.config
    pool = WorkerPool.build(cfg.simulation, cfg.campaign.seed)
    q = cfg.quality
    failed = {w for w, (n, right) in qualification_results(run, pool).items()
              if not passes_qualification(n, right, q)}
    return SimulatedCrowd(truth_of(run), pool, blocked=failed)


# ------------------------------------------------------------------------- the MTurk crowd
class MTurkCrowd:
    """The crowd seam on :class:`~crowdprop.crowd.mturk.MTurkBackend`, safe to resume.

    Parameters
    ----------
    backend : MTurkBackend
    run : RunDir
        Read (never written): the journal of the round in progress, and the
        spend of committed rounds for the budget guard.
    handle : crowdprop.mturk_local.Handle or None
        A local endpoint this crowd owns; :meth:`close` stops it.
    reconcile : bool
        Look up tokens journaled without a HIT id in ListHITs before publishing.
    """

    name = "mturk"

    def __init__(self, backend, run: RunDir, *, handle=None, reconcile: bool = True):
        self.backend = backend
        self.run = run
        self.handle = handle
        self.local = None if handle is None else handle.local
        """The in-process :class:`~crowdprop.mturk_local.LocalMTurk`, if any (its ledger outlives close())."""
        self.reconcile = reconcile
        self._known: dict[str, str] | None = None
        self._orphans: set[str] = set()
        self._found: dict[str, str] | None = None
        self.reused = 0
        """HITs found in the journal or on MTurk instead of being created (this process)."""

    def _read_journal(self) -> None:
        """Tokens of the journal: with a HIT id (published), or journaled without one (a crash
        between the record and CreateHIT's answer). Read when first needed, after the campaign
        loop has taken the lock (and dropped the journal of a copied run directory)."""
        self._known, self._orphans = {}, set()
        for r in _journal_rounds(self.run):
            for rec in self.run.journal_lines(r, "published"):
                if rec.get("hit_id"):
                    self._known[rec["token"]] = rec["hit_id"]
                else:
                    self._orphans.add(rec["token"])
        self._orphans -= set(self._known)

    @property
    def known(self) -> dict[str, str]:
        if self._known is None:
            self._read_journal()
        assert self._known is not None  # _read_journal sets it
        return self._known

    @property
    def orphans(self) -> set[str]:
        if self._known is None:
            self._read_journal()
        return self._orphans

    def __getattr__(self, attr):  # balance(), find_hits(), worker_url(), guard...
        backend = self.__dict__.get("backend")
        if backend is None:
            raise AttributeError(attr)
        return getattr(backend, attr)

    def _existing(self, hit: HitRequest) -> str | None:
        if hit.token in self.known:
            return self.known[hit.token]
        if hit.token in self.orphans and self.reconcile:
            if self._found is None:
                self._found = self.backend.find_hits(hit.campaign)
                log.info("reconciled %d journaled HIT token(s) without an id against ListHITs: %d found",
                         len(self.orphans), len(self.orphans & set(self._found)))
            return self._found.get(hit.token)
        return None

    def publish(self, hit: HitRequest, *, admitted: bool = False) -> str:
        """The HIT of ``hit.token``: found (journal, ListHITs) and verified, else created.
        The campaign loop updates :attr:`guard` before each HIT it publishes; ``admitted``: a
        token journaled before (see :meth:`MTurkBackend.publish`)."""
        hit_id = self._existing(hit)
        if hit_id is not None:
            self.backend.verify(hit_id, hit)
            self.backend.remember(hit_id, hit)
            self.reused += 1
            return hit_id
        hit_id = self.backend.publish(hit, admitted=admitted)
        self.known[hit.token] = hit_id
        return hit_id

    def poll(self, hit_ids: Sequence[str], *, settled: bool = False) -> list[Assignment]:
        return self.backend.poll(hit_ids, settled=settled)

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> str:
        return self.backend.settle(assignment_id, approve, feedback)

    def hit_state(self, hit_id: str) -> dict:
        return self.backend.hit_state(hit_id)

    def expire(self, hit_id: str) -> None:
        self.backend.expire(hit_id)

    def block(self, worker_id: str, kind: str) -> None:
        """``soft``: the campaign's blocked qualification; ``hard``: MTurk CreateWorkerBlock;
        ``qualification``: nothing (MTurk enforces the test). See :meth:`MTurkBackend.block`."""
        self.backend.block(worker_id, kind)

    @property
    def failed_qualification(self) -> set[str]:
        """Workers MTurk graded below the qualification test's pass mark (recorded as blocks by the loop)."""
        return self.backend.failed_qualification

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            if self.handle is not None:
                self.handle.stop()
                self.handle = None


def _journal_rounds(run: RunDir) -> list[int]:
    root = run.path / "journal"
    if not root.is_dir():
        return []
    return sorted(int(p.name.split("=")[1]) for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("round=") and p.name.split("=")[1].isdigit())


def _quiet_botocore() -> None:
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

    _quiet_botocore()
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
    from .roundplan import CREW_FILES, frozen

    rounds = _journal_rounds(run)
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

    from ..hits.images import LocalFolderTarget, OverlayStore
    from ..mturk_local import serve, truth_from_masks

    cfg = run.config
    images = images or run.campaign.get("crowd", {}).get("images", "skip")
    if images not in IMAGE_MODES:
        raise StateError(f"{run.path}/campaign.json: crowd images '{images}' must be one of {', '.join(IMAGE_MODES)}")
    masks = run.masks
    if not np.isfinite(masks["gt_iou"].to_numpy(np.float64)).any():
        raise StateError(f"{run.path}: a local endpoint with simulated workers needs ground truth, and this run has none")
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
        store = OverlayStore(LocalFolderTarget(images_dir, handle.url + "/images"), images=run.table("images"))
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


# ------------------------------------------------------------------------- real MTurk
@dataclass
class Target:
    """Where an ``mturk`` crowd publishes: recorded in ``campaign.json`` (never credentials)."""

    target: str = "sandbox"
    endpoint_url: str | None = None
    profile: str | None = None
    image_root: str | None = None

    def entry(self) -> dict:
        out = {"kind": "mturk", "target": self.target}
        for k in ("endpoint_url", "profile", "image_root"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        return out

    def describe(self) -> str:
        where = {"sandbox": "the MTurk sandbox", "production": "the production MTurk",
                 "local": "an MTurk-compatible endpoint"}[self.target]
        return where + (f" at {self.endpoint_url}" if self.endpoint_url else "")


def started(run: RunDir) -> bool:
    """Whether the campaign may have published anything: a committed round, or a round in progress
    that journaled a HIT (a first round that failed before its first CreateHIT may still move)."""
    if run.rounds():
        return True
    for r in _journal_rounds(run):
        maybe: dict[str, bool] = {}
        for x in run.journal_lines(r, "published"):
            if x.get("hit_id"):
                return True
            if x.get("event") in ("create", "unsent"):  # unsent: the connection failed before CreateHIT went out
                maybe[x["token"]] = x["event"] == "create"
        if any(maybe.values()):
            return True
    return False


def resolve_target(run: RunDir, *, target: str | None = None, endpoint_url: str | None = None,
                   profile: str | None = None, image_root: str | None = None) -> Target:
    """The MTurk target of this invocation: the options given, else what the run recorded.

    Raises :class:`StateError` when the run's crowd is not MTurk, when a started
    campaign would move to another target (its HITs live where they were
    published), and when a production campaign is continued without
    ``target="production"`` being given explicitly.
    """
    crowd = run.campaign.get("crowd", {}) or {}
    kind = crowd.get("kind", "simulated")
    if kind != "mturk":
        raise StateError(f"{run.path}: its crowd is '{kind}'; --target/--endpoint-url/--profile/--images "
                         "apply to MTurk runs only (crowdprop init --crowd mturk)")
    recorded = crowd.get("target", "sandbox")
    if recorded not in TARGETS:
        raise StateError(f"{run.path}/campaign.json: crowd target '{recorded}' must be one of {', '.join(TARGETS)}")
    if target is None:
        target = "local" if endpoint_url and recorded != "production" and not started(run) else recorded
        if target == "production":
            raise StateError(f"{run.path}: this campaign runs on the production MTurk (real money); "
                             "continue it with --target production")
    if target not in TARGETS:
        raise InputError("command line", None, "--target", f"must be one of {', '.join(TARGETS)}")
    if target != recorded and started(run):
        raise StateError(f"{run.path}: this campaign was started on {Target(recorded).describe()} and its HITs live "
                         f"there; it cannot move to {Target(target).describe()} (create a new run with crowdprop init)")
    url = endpoint_url or crowd.get("endpoint_url") or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise InputError("command line", None, "--endpoint-url", "must start with http:// or https://")
    if target == "local" and url is None:
        raise InputError("command line", None, "--endpoint-url",
                         "a local target needs the endpoint's URL (e.g. the one crowdprop mturk-local prints)")
    if endpoint_url and crowd.get("endpoint_url") and endpoint_url != crowd["endpoint_url"] and started(run):
        log.warning("%s: endpoint changed from %s to %s; HITs published at the old one must exist at the new one",
                    run.path, crowd["endpoint_url"], endpoint_url)
    root = image_root or crowd.get("image_root") or None
    if root is not None:
        root = str(Path(root).resolve())
        if not Path(root).is_dir():
            raise InputError(root, None, "--images", "not a directory (the folder holding the images' files)")
    return Target(target=target, endpoint_url=url, profile=profile or crowd.get("profile") or None, image_root=root)


def record_target(run: RunDir, where: Target) -> None:
    """Write the target into ``campaign.json`` (crowd entry; no credentials)."""
    data = dict(run.campaign)
    entry = dict(data.get("crowd", {}) or {})
    entry.update(where.entry())
    for k in ("endpoint_url", "profile", "image_root"):
        if not getattr(where, k):
            entry.pop(k, None)
    if entry != data.get("crowd"):
        data["crowd"] = entry
        run.write_campaign(data)


def image_url_key(run: RunDir) -> bytes:
    """The campaign's key naming its public pictures (``[mturk] s3_public``): 32 random bytes
    kept in campaign.json (``image_url_key``), made on first use (call holding the lock)."""
    data = dict(run.campaign)
    if not data.get("image_url_key"):
        import secrets

        data["image_url_key"] = secrets.token_hex(32)
        run.write_campaign(data)
    return bytes.fromhex(data["image_url_key"])


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
    raise InputError(run.path / "config.json", "[mturk]", "s3_bucket",
                     "workers need to see the pictures: set [mturk] s3_bucket (uploaded, presigned URLs) or "
                     "image_base_url (RUN_DIR/hit_images served at that https URL)")


def mturk_backend(run: RunDir, where: Target, *, client=None, retry_wait_s: float = 1.0,
                  sleep: Callable[[float], None] | None = None) -> MTurkCrowd:
    """An :class:`MTurkCrowd` for ``where`` (connects with the AWS chain unless ``client`` is given)."""
    import time

    from ..hits.images import OverlayStore

    cfg = run.config
    section = cfg.mturk
    store_target = _image_target(run, where, section, where.profile)
    if client is None:
        _quiet_botocore()
        client = _mturk.connect(None if where.target == "local" else where.target, endpoint_url=where.endpoint_url,
                                profile=where.profile, region="us-east-1")
    store = OverlayStore(store_target, images=run.table("images"), image_root=where.image_root)
    backend = _mturk.MTurkBackend(client, config=cfg, mturk=section, page=_page(run, store.url, section),
                                  target=where.target, masks=run.masks, guard=_guard(run),
                                  retry_wait_s=retry_wait_s, retry_max_wait_s=max(retry_wait_s, 60.0),
                                  sleep=sleep or time.sleep, campaign_id=run.campaign.get("campaign_id"),
                                  test=qualification_test(run, duration_s=section.test_duration_s))
    return MTurkCrowd(backend, run, reconcile=True)


def make_backend(run: RunDir, *, target: str | None = None, endpoint_url: str | None = None,
                 profile: str | None = None, image_root: str | None = None):
    """The crowd backend of ``run`` (see the module docstring); close it when done."""
    kind = (run.campaign.get("crowd", {}) or {}).get("kind", "simulated")
    if kind != "mturk" and any(v is not None for v in (target, endpoint_url, profile, image_root)):
        raise StateError(f"{run.path}: its crowd is '{kind}'; --target/--endpoint-url/--profile/--images "
                         "apply to MTurk runs only (crowdprop init --crowd mturk)")
    if kind == "simulated":
        return simulated_backend(run)
    if kind == "mturk-local":
        return local_endpoint_backend(run)
    if kind == "mturk":
        where = resolve_target(run, target=target, endpoint_url=endpoint_url, profile=profile, image_root=image_root)
        crowd = mturk_backend(run, where)
        record_target(run, where)
        return crowd
    raise StateError(f"{run.path}: crowd kind '{kind}' is not available in this version")


def hit_cost_estimate(run: RunDir) -> dict:
    """What the remaining budget buys: ``remaining_usd``, ``spent_usd``, ``hit_usd``, ``hits``.

    ``hit_usd`` is the most one full HIT can cost (every assignment approved,
    MTurk's fee included); ``hits`` how many of those the remaining budget pays.
    Computed in cents (:mod:`.ledger`); dollars are the view.
    """
    from ..hits.batching import reward_cents_for
    from ..money import cap_cents, usd
    from .ledger import FEES, spent_cents

    cfg = run.config
    spent = spent_cents(run)
    remaining = max(0, cap_cents(cfg.campaign.budget_usd) - spent)
    n = cfg.crowd.assignments_per_hit
    reward = reward_cents_for(cfg.crowd.questions_per_hit, cfg.crowd)
    per_hit = FEES.hit_cost_cents(reward, n)
    return {"spent_usd": usd(spent), "remaining_usd": usd(remaining), "hit_usd": usd(per_hit),
            "reward_usd": usd(reward), "fee_usd": usd(FEES.assignment_fee_cents(reward, n)),
            "hits": remaining // per_hit if per_hit > 0 else 0,
            "questions_per_hit": cfg.crowd.questions_per_hit, "assignments": n}
