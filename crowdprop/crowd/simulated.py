"""In-process simulated crowd: the CrowdBackend of a replay when no HTTP is wanted.

Workers come from :class:`crowdprop.replay.workers.WorkerPool` and answer from
ground truth. Every answer is a pure function of (seed, worker, HIT token,
question), so a campaign interrupted at any moment and run again sees the same
answers, and so does the same replay through the local MTurk endpoint.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..replay.workers import WorkerPool
from .base import UNSUPPORTED, Assignment, BlockKind, HitRequest, HitState, content_key

log = logging.getLogger(__name__)


class SimulatedCrowd:
    """A crowd that finishes every HIT as soon as it is published.

    Parameters
    ----------
    truth : (n,) bool array
        Whether each mask row is correct (from ground truth).
    pool : WorkerPool
    blocked : set of worker ids that get no HITs at all (failed the qualification test).
    """

    name = "simulated"

    def __init__(self, truth: np.ndarray, pool: WorkerPool, *, blocked: set[str] | None = None):
        self.truth = np.asarray(truth, dtype=bool)
        self.pool = pool
        self.blocked = set(blocked or ())
        self.failed_qualification = set(blocked or ())
        """Workers kept out before their first HIT (the qualification test)."""
        self._hits: dict[str, HitRequest] = {}
        self._assignments: dict[str, Assignment] = {}
        self._by_hit: dict[str, list[str]] = {}
        self.publish_calls = 0

    def publish(self, hit: HitRequest, *, admitted: bool = False) -> str:
        self.publish_calls += 1
        hit_id = f"SIMHIT-{hit.token}"
        if hit_id in self._hits:
            return hit_id
        self._hits[hit_id] = hit
        # The same keys as the local MTurk endpoint's simulated workers (what the HIT asks),
        # so a replay gives the same answers through either crowd.
        key = content_key([q.question_id for q in hit.questions])
        workers = self.pool.pick(key, hit.assignments, exclude=self.blocked)
        ids = []
        qids = [q.question_id for q in hit.questions]
        keys = [f"{key}:{qid}" for qid in qids]
        truth = self.truth[np.fromiter((q.mask_row for q in hit.questions), dtype=np.int64, count=len(qids))]
        for a, w in enumerate(workers):
            wid = self.pool.worker_ids[w]
            # pool.answer for each question, drawn for the HIT at once (the same answers)
            answers = dict(zip(qids, self.pool.answers(w, keys, truth)))
            secs = self.pool.seconds(w, key, len(hit.questions))
            aid = f"SIMASG-{hit.token}-{a}"
            self._assignments[aid] = Assignment(assignment_id=aid, hit_id=hit_id, worker_id=wid, answers=answers,
                                                work_seconds=secs, accept_time=0.0, submit_time=secs,
                                                reward_cents=hit.reward_cents)
            ids.append(aid)
        self._by_hit[hit_id] = ids
        return hit_id

    def poll(self, hit_ids: Sequence[str], *, settled: bool = False) -> list[Assignment]:
        out = []
        for h in hit_ids:
            for aid in self._by_hit.get(h, []):
                a = self._assignments[aid]
                if settled or a.status == "Submitted":
                    out.append(a)
        return out

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> str:
        a = self._assignments[assignment_id]
        if a.status == "Submitted":
            a.status = "Approved" if approve else "Rejected"
        return a.status

    def expire(self, hit_id: str) -> None:
        pass

    def hit_state(self, hit_id: str) -> HitState:
        """Every worker submits within publish(): nothing is ever pending, and no slot stays open."""
        return {"pending": 0, "available": 0, "gone": hit_id not in self._hits}

    def extend(self, hit_id: str, assignments: int, token: str) -> str:
        """Not offered: a simulated HIT is finished when it is published."""
        return UNSUPPORTED

    def block(self, worker_id: str, kind: BlockKind | str) -> None:
        """Any kind: the worker gets no further HITs."""
        BlockKind(kind)
        self.blocked.add(worker_id)

    guard = None
    """Nothing real is spent: the campaign loop's ledger is the only budget check."""

    def send_bonus(self, *, worker_id: str, assignment_id: str, reason: str, token: str,
                   amount_usd: float | None = None, amount_cents: int | None = None, admitted: bool = False) -> str:
        """Not offered: a simulated bonus lives in the books only."""
        return UNSUPPORTED

    def balance(self) -> float | None:
        """No account."""
        return None

    def close(self) -> None:
        pass
