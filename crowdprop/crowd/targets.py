"""Where an ``mturk`` crowd publishes (sandbox, production, an endpoint URL), as ``campaign.json`` records it."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, StateError
from .base import CrowdKind
from .resume import journal_rounds

if TYPE_CHECKING:
    from ..campaign.store import RunDir

log = logging.getLogger(__name__)

TARGETS = ("sandbox", "production", "local")


def crowd_kind(run: RunDir) -> CrowdKind:
    """The run's crowd kind (``campaign.json["crowd"]["kind"]``, ``simulated`` when absent)."""
    kind = (run.campaign.get("crowd", {}) or {}).get("kind", CrowdKind.SIMULATED.value)
    try:
        return CrowdKind(kind)
    except ValueError:
        raise StateError(f"{run.path}: crowd kind '{kind}' is not available in this version") from None



@dataclass
class Target:
    """Where an ``mturk`` crowd publishes: recorded in ``campaign.json`` (never credentials)."""

    target: str = "sandbox"
    endpoint_url: str | None = None
    profile: str | None = None
    image_root: str | None = None

    def entry(self) -> dict:
        out = {"kind": CrowdKind.MTURK.value, "target": self.target}
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
    for r in journal_rounds(run):
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
    kind = crowd_kind(run)
    if kind != CrowdKind.MTURK:
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
