"""Workers and time at the local endpoint: who may work on a HIT, simulated workers previewing,
taking qualification tests, submitting (on time or late), and the clock's consequences
(abandoned assignments, automatic approval).

The semantics are :mod:`.service`'s (its "Simulated workers" and "Time" sections). Work is
done lazily: :meth:`Simulation._advance` brings everything up to date and runs at the start
of every operation.
"""
from __future__ import annotations

import heapq
import logging
import math
import time

from ..replay.workers import rng_for
from .core import ServiceCore
from .pages import answers_xml
from .records import SYSTEM_QUALIFICATIONS, Assignment, Hit

log = logging.getLogger(__name__)


class Simulation(ServiceCore):
    """Qualification checks, simulated workers and the clock (previews, submissions, expiry, auto-approval)."""

    def _qualified(self, worker_id: str, reqs: list[dict]) -> bool:
        for r in reqs:
            qt = r["QualificationTypeId"]
            if qt in SYSTEM_QUALIFICATIONS:
                continue
            q = self._quals.get((qt, worker_id))
            value = q["IntegerValue"] if q is not None and q["Status"] == "Granted" else None
            comp = r["Comparator"]
            ints = r.get("IntegerValues") or []
            if comp == "Exists":
                ok = value is not None
            elif comp == "DoesNotExist":
                ok = value is None
            elif value is None:
                ok = False
            elif comp == "In":
                ok = value in ints
            elif comp == "NotIn":
                ok = value not in ints
            else:
                x = ints[0] if ints else None
                ok = x is not None and {
                    "LessThan": value < x, "LessThanOrEqualTo": value <= x, "GreaterThan": value > x,
                    "GreaterThanOrEqualTo": value >= x, "EqualTo": value == x, "NotEqualTo": value != x,
                }[comp]
            if not ok:
                return False
        return True

    def _can_work(self, worker_id: str, hit: Hit) -> bool:
        if worker_id in self._blocks or not self._qualified(worker_id, hit.type.requirements):
            return False
        return all(self._assignments[a].worker_id != worker_id or self._assignments[a].state in ("Dropped",)
                   for a in hit.assignments)

    def _schedule(self, hit: Hit, slots: int, pick_key: str) -> None:
        """Simulated workers preview ``slots`` assignment slots of ``hit``."""
        if not (self.simulate and hit.simulated and slots > 0):
            return
        if self.unanswered_share > 0:
            skip = rng_for("unanswered", self.pool.seed, pick_key).random(slots) < self.unanswered_share
            slots -= int(skip.sum())
        self._take_tests(hit.type.requirements)
        exclude = {w for w in self.pool.worker_ids if not self._can_work(w, hit)}
        due = time.monotonic() + self.work_delay
        picked = self.pool.pick(pick_key, slots, exclude)
        late = rng_for("late", self.pool.seed, pick_key).random(len(picked)) < self.late_share
        for w, is_late in zip(picked, late):
            a = Assignment(self._new_id("assignment"), hit.id, self.pool.worker_ids[w], "Previewing",
                            "simulated", worker_index=w, due=due, late=bool(is_late))
            self._assignments[a.id] = a
            hit.assignments.append(a.id)
            heapq.heappush(self._previewing, (due, next(self._seq), a.id))

    def _take_tests(self, reqs: list[dict]) -> None:
        """Every simulated worker not blocked takes, once, the test of each required qualification.

        The questions are answered ``pool.answer(w, "qualification:" + identifier, truth[mask_id])``
        (selection ``yes`` / ``no``), scored with the AnswerKey, and the qualification is
        granted with the resulting value. A test without an AnswerKey waits for the
        requester's review (not simulated): its takers hold nothing.
        """
        now = self.clock()
        for r in reqs:
            qt = r["QualificationTypeId"]
            parsed = self._tests.get(qt)
            if parsed is None or self._qual_types[qt]["QualificationTypeStatus"] != "Active":
                continue
            questions, key = parsed
            for w, wid in enumerate(self.pool.worker_ids):
                if (qt, wid) in self._test_takers or (qt, wid) in self._quals or wid in self._blocks:
                    continue
                self._test_takers[(qt, wid)] = now
                if key is None:
                    continue
                selected = {}
                for q in questions:
                    t = self.truth.get(q.mask_id) if q.mask_id is not None else None
                    if t is None:
                        continue
                    yes = self.pool.answer(w, f"qualification:{q.identifier}", t)
                    choice = next((s for s in q.selections if s.strip().lower() == ("yes" if yes else "no")), None)
                    if choice is not None:
                        selected[q.identifier] = frozenset([choice])
                value = key.value(key.score(selected))
                self._quals[(qt, wid)] = {"QualificationTypeId": qt, "WorkerId": wid, "GrantTime": now,
                                          "IntegerValue": value, "Status": "Granted"}

    def _simulated_work(self, a: Assignment, hit: Hit, now: float, accept_time: float | None = None) -> None:
        w = a.worker_index
        if w is None:  # only simulated assignments come here, each with its worker's index in the pool
            raise RuntimeError(f"assignment {a.id} has no simulated worker")
        fields = []
        unknown = []
        for q in hit.questions:
            t = self.truth.get(q.mask_id) if q.mask_id is not None else None
            if t is None:
                unknown.append(q)
                continue
            yes = self.pool.answer(w, f"{hit.key}:{q.question_id}", t)
            fields.append((q.question_id, "yes" if yes else "no"))
        if unknown and hit.id not in self._warned_hits:
            self._warned_hits.add(hit.id)
            log.warning("HIT %s: %d question(s) have no ground truth (first: %s, mask id %r); "
                        "simulated workers leave them unanswered", hit.id, len(unknown), unknown[0].question_id,
                        unknown[0].mask_id)
        seconds = self.pool.seconds(w, hit.key, len(hit.questions))
        if accept_time is None:
            self._submit(a, hit, answers_xml(fields), accept_time=now, submit_time=now + seconds)
        else:  # a late worker: accepted earlier, submits now (having worked their usual time at least)
            self._submit(a, hit, answers_xml(fields), accept_time=accept_time,
                         submit_time=max(now, accept_time + seconds))

    def _submit(self, a: Assignment, hit: Hit, answer: str, *, accept_time: float, submit_time: float) -> None:
        self._accepted.discard(a.id)
        a.state = "Submitted"
        a.answer = answer
        a.accept_time = accept_time
        a.submit_time = submit_time
        a.deadline = accept_time + hit.type.assignment_duration
        a.auto_approval_time = submit_time + hit.type.auto_approval_delay
        if self.auto_approve_after is not None:
            a.auto_approval_time = min(a.auto_approval_time, self.clock() + self.auto_approve_after)
        a.seq = next(self._seq)
        heapq.heappush(self._auto, (a.auto_approval_time, a.seq, a.id))

    def _advance(self) -> None:
        """Bring simulated work, abandoned assignments and auto-approvals up to date."""
        mono = time.monotonic()
        now = self.clock()
        while self._previewing and self._previewing[0][0] <= mono:
            _, _, aid = heapq.heappop(self._previewing)
            a = self._assignments[aid]
            hit = self._hits[a.hit_id]
            if a.state != "Previewing":
                continue
            if hit.deleted or now >= hit.expiration or a.worker_id in self._blocks:
                a.state = "Dropped"
                continue
            if a.late:  # accepts now, submits late_delay real seconds later
                a.state, a.accept_time, a.deadline = "Accepted", now, now + hit.type.assignment_duration
                self._accepted.add(a.id)
                heapq.heappush(self._late, (mono + self.late_delay, next(self._seq), a.id))
                continue
            self._simulated_work(a, hit, now)
        while self._late and self._late[0][0] <= mono:
            _, _, aid = heapq.heappop(self._late)
            a = self._assignments[aid]
            if a.state == "Accepted" and not a.overdue(now) and not self._hits[a.hit_id].deleted:
                self._simulated_work(a, self._hits[a.hit_id], now, accept_time=a.accept_time)
        for aid in [x for x in self._accepted if self._assignments[x].overdue(now)]:
            self._assignments[aid].state = "Abandoned"
            self._accepted.discard(aid)
        while self._auto and self._auto[0][0] <= now:
            t, _, aid = heapq.heappop(self._auto)
            a = self._assignments[aid]
            if a.state == "Submitted":
                self._approve(a, self._hits[a.hit_id], t, feedback=None, auto=True)

    def work(self, *, late: bool = False) -> int:
        """Let every previewing simulated worker submit now, whatever ``work_delay`` says (late
        workers accept now); with ``late=True`` late workers who accepted submit now too (after
        their HIT expired, if it did: MTurk takes work accepted before expiry).

        Returns the number of assignments submitted or accepted."""
        with self._lock:
            n = 0
            for heap in (self._previewing, self._late) if late else (self._previewing,):
                for i, (_, s, aid) in enumerate(heap):
                    heap[i] = (-math.inf, s, aid)
                    n += self._assignments[aid].state in ("Previewing", "Accepted")
                heapq.heapify(heap)
            self._advance()
            return n
