"""The resumable MTurk crowd: :class:`MTurkCrowd` around :class:`~crowdprop.crowd.mturk.MTurkBackend`.

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

"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from . import mturk as _mturk
from .base import Assignment, BlockKind, HitRequest, HitState

if TYPE_CHECKING:
    from ..campaign.store import RunDir

log = logging.getLogger(__name__)


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
        for r in journal_rounds(self.run):
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

    def hit_state(self, hit_id: str) -> HitState:
        return self.backend.hit_state(hit_id)

    def expire(self, hit_id: str) -> None:
        self.backend.expire(hit_id)

    def extend(self, hit_id: str, assignments: int, token: str) -> str:
        return self.backend.extend(hit_id, assignments, token)

    @property
    def guard(self) -> _mturk.BudgetGuard:
        """The backend's budget guard (the campaign loop updates it before each HIT it publishes)."""
        return self.backend.guard

    def send_bonus(self, *, worker_id: str, assignment_id: str, reason: str, token: str,
                   amount_usd: float | None = None, amount_cents: int | None = None, admitted: bool = False) -> str:
        return self.backend.send_bonus(worker_id=worker_id, assignment_id=assignment_id, reason=reason, token=token,
                                       amount_usd=amount_usd, amount_cents=amount_cents, admitted=admitted)

    def balance(self) -> float:
        return self.backend.balance()

    def block(self, worker_id: str, kind: BlockKind | str) -> None:
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


def journal_rounds(run: RunDir) -> list[int]:
    root = run.path / "journal"
    if not root.is_dir():
        return []
    return sorted(int(p.name.split("=")[1]) for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("round=") and p.name.split("=")[1].isdigit())
