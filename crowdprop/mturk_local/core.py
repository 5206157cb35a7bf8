"""The state of the local endpoint and what its operations share: errors, ids, paging, lookups,
the response structures MTurk returns, and charging approved work.

:class:`ServiceCore` holds every table of a :class:`~crowdprop.mturk_local.service.LocalMTurk`
(HIT types, HITs, assignments, qualifications, blocks, the ledger); the operations are
its subclasses' (:mod:`.hits`, :mod:`.assignments`, :mod:`.worker_ops`, :mod:`.browser`),
the simulated workers :mod:`.simulation`'s. Every method expects the caller to hold ``_lock``.
"""
from __future__ import annotations

import base64
import itertools
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..crowd.base import Fees
from ..errors import MTurkError
from ..money import cents
from ..replay.workers import WorkerPool
from .faults import FaultConfig, FaultInjector
from .qualification import AnswerKey, TestQuestion
from .records import ID_ALPHABET, PUBLIC_STATES, Assignment, Hit, HitType, usd_text

log = logging.getLogger(__name__)


class ServiceCore:
    """The endpoint's tables and the helpers every operation uses (parameters: :class:`LocalMTurk`)."""

    def __init__(self, truth: Mapping[int, bool], pool: WorkerPool, *, fees: Fees | None = None,
                 balance: float = 10000.0, faults: FaultConfig | None = None,
                 images_dir: str | Path | None = None, clock: Callable[[], float] | None = None,
                 work_delay: float = 0.0, simulate: bool = True, unanswered_share: float = 0.0,
                 late_share: float = 0.0, late_delay: float = 0.0, auto_approve_after: float | None = None):
        if work_delay < 0 or late_delay < 0:
            raise ValueError("work_delay and late_delay must be >= 0")
        if not 0.0 <= late_share <= 1.0:
            raise ValueError("late_share must be in [0, 1]")
        if auto_approve_after is not None and auto_approve_after < 0:
            raise ValueError("auto_approve_after must be >= 0")
        if not 0.0 <= unanswered_share <= 1.0:
            raise ValueError("unanswered_share must be in [0, 1]")
        self.truth = {int(k): bool(v) for k, v in truth.items()}
        self.pool = pool
        self.fees = fees if fees is not None else Fees()
        self.faults = faults
        self.fault_injector = FaultInjector(faults) if faults is not None else None
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.clock = clock if clock is not None else time.time
        self.work_delay = float(work_delay)
        self.simulate = bool(simulate)
        self.unanswered_share = float(unanswered_share)
        self.late_share = float(late_share)
        self.late_delay = float(late_delay)
        self.auto_approve_after = None if auto_approve_after is None else float(auto_approve_after)
        self._late: list[tuple[float, int, str]] = []  # heap (monotonic submit time, n, assignment id)
        self._lock = threading.RLock()
        self._hit_count = itertools.count()
        self._seq = itertools.count()
        self._initial_cents = cents(balance)
        self._balance_cents = self._initial_cents
        self._hit_types: dict[str, HitType] = {}
        self._hits: dict[str, Hit] = {}
        self._assignments: dict[str, Assignment] = {}
        self._hit_tokens: dict[str, tuple[str, float]] = {}
        self._hits_per_token: dict[str, list[str]] = {}
        self._bonus_tokens: dict[str, float] = {}
        self._extra_tokens: dict[str, float] = {}
        self._bonuses: list[dict] = []
        self._qual_types: dict[str, dict] = {}
        self._quals: dict[tuple[str, str], dict] = {}
        self._tests: dict[str, tuple[list[TestQuestion], AnswerKey | None]] = {}
        """Qualification type id -> its Test's questions and AnswerKey (types with a Test only)."""
        self._test_takers: dict[tuple[str, str], float] = {}
        """(qualification type id, worker id) -> when the worker took the type's test."""
        self._blocks: dict[str, str] = {}
        self._previewing: list[tuple[float, int, str]] = []  # heap (due, n, assignment id)
        self._auto: list[tuple[float, int, str]] = []  # heap (auto approval time, n, assignment id)
        self._entries: list[dict] = []
        self._approvals: dict[str, int] = {}
        self._approve_calls: dict[str, int] = {}
        self._bonus_counts: dict[str, int] = {}
        self._warned_hits: set[str] = set()
        self._accepted: set[str] = set()

    # ------------------------------------------------------------------ errors, ids, paging
    def _err(self, message: str, code: str | None = None, **kw) -> MTurkError:
        # MTurk ends every message with the server time in milliseconds.
        return MTurkError(f"{message} ({int(self.clock() * 1000)})", code, **kw)

    def _new_id(self, kind: str, length: int = 30) -> str:
        """A fresh random id of ``length`` upper-case letters and digits (``kind`` names what it is for)."""
        while True:
            new = "3" + "".join(secrets.choice(ID_ALPHABET) for _ in range(length - 1))
            if new not in self._hits and new not in self._assignments and new not in self._qual_types:
                return new

    @staticmethod
    def _token(kind: str, seq: int) -> str:
        return base64.urlsafe_b64encode(f"{kind}:{seq}".encode()).decode("ascii")

    def _page(self, kind: str, items: list[tuple[int, Any]], params: Mapping[str, Any]) -> tuple[list, str | None]:
        """One page of ``items`` (sorted by their int key) after ``NextToken``."""
        mr = params.get("MaxResults", 10)
        if not isinstance(mr, int) or isinstance(mr, bool) or not 1 <= mr <= 100:
            raise self._err(f"Value {mr!r} for MaxResults is invalid: must be between 1 and 100",
                            "AWS.ParameterOutOfRange")
        after = -1
        tok = params.get("NextToken")
        if tok is not None:
            try:
                k, s = base64.urlsafe_b64decode(tok.encode("ascii")).decode("ascii").split(":")
                after = int(s)
                if k != kind:
                    raise ValueError
            except (ValueError, UnicodeError, AttributeError):
                raise self._err("The pagination token is invalid.",
                                "AWS.MechanicalTurk.InvalidPaginationToken") from None
        rest = [(k, v) for k, v in items if k > after]
        page = rest[:mr]
        nxt = self._token(kind, page[-1][0]) if len(rest) > mr else None
        return [v for _, v in page], nxt

    # ------------------------------------------------------------------ money
    def _charge(self, cents: int, kind: str, a: Assignment, when: float) -> None:
        self._balance_cents -= cents
        self._entries.append({"time": when, "kind": kind, "usd": usd_text(cents), "cents": cents,
                              "hit_id": a.hit_id, "assignment_id": a.id, "worker_id": a.worker_id})

    def _approve(self, a: Assignment, hit: Hit, when: float, *, feedback: str | None, auto: bool) -> None:
        reward = hit.type.reward_cents
        fee = self.fees.assignment_fee_cents(reward, hit.max_assignments)
        if not auto and self._balance_cents < reward + fee:
            raise self._err("You do not have enough funds to approve this assignment.",
                            "AWS.MechanicalTurk.InsufficientFunds")
        a.state = "Approved"
        a.approval_time = when
        a.rejection_time = None
        if feedback is not None:
            a.feedback = feedback
        self._charge(reward, "reward", a, when)
        self._charge(fee, "fee", a, when)
        self._approvals[a.id] = self._approvals.get(a.id, 0) + 1
        log.debug("assignment %s approved%s", a.id, " automatically" if auto else "")

    # ------------------------------------------------------------------ views
    def _status(self, hit: Hit, now: float) -> tuple[str, int, int, int]:
        pending = done = completed = 0
        expired = now >= hit.expiration
        for aid in hit.assignments:
            s = self._assignments[aid].state
            if s == "Accepted" or (s == "Previewing" and not expired):
                # simulated workers who only previewed drop out when the HIT expires
                pending += 1
            elif s in PUBLIC_STATES:
                done += 1
                completed += s != "Submitted"
        available = 0 if expired else max(0, hit.max_assignments - pending - done)
        if hit.deleted:
            status = "Disposed"
        elif available > 0:
            status = "Assignable"
        elif pending > 0:
            status = "Unassignable"
        else:
            status = "Reviewing" if hit.reviewing else "Reviewable"
        return status, pending, available, completed

    def _hit_view(self, hit: Hit) -> dict:
        status, pending, available, completed = self._status(hit, self.clock())
        t = hit.type
        out = {
            "HITId": hit.id, "HITTypeId": t.id, "HITGroupId": hit.group_id, "CreationTime": hit.creation,
            "Title": t.title, "Description": t.description, "Question": hit.question, "HITStatus": status,
            "MaxAssignments": hit.max_assignments, "Reward": usd_text(t.reward_cents),
            "AutoApprovalDelayInSeconds": t.auto_approval_delay, "Expiration": hit.expiration,
            "AssignmentDurationInSeconds": t.assignment_duration, "QualificationRequirements": t.requirements,
            "HITReviewStatus": hit.review_status, "NumberOfAssignmentsPending": pending,
            "NumberOfAssignmentsAvailable": available, "NumberOfAssignmentsCompleted": completed,
        }
        if t.keywords is not None:
            out["Keywords"] = t.keywords
        if hit.annotation is not None:
            out["RequesterAnnotation"] = hit.annotation
        return out

    @staticmethod
    def _assignment_view(a: Assignment) -> dict:
        out = {"AssignmentId": a.id, "WorkerId": a.worker_id, "HITId": a.hit_id, "AssignmentStatus": a.state,
               "AutoApprovalTime": a.auto_approval_time, "AcceptTime": a.accept_time, "SubmitTime": a.submit_time,
               "Deadline": a.deadline, "Answer": a.answer}
        if a.approval_time is not None:
            out["ApprovalTime"] = a.approval_time
        if a.rejection_time is not None:
            out["RejectionTime"] = a.rejection_time
        if a.feedback is not None:
            out["RequesterFeedback"] = a.feedback
        return out

    def _get_hit(self, hit_id: str) -> Hit:
        hit = self._hits.get(hit_id)
        if hit is None or hit.deleted:
            raise self._err(f"Hit {hit_id} does not exist.", "AWS.MechanicalTurk.HITDoesNotExist")
        return hit

    def _get_assignment(self, aid: str) -> Assignment:
        a = self._assignments.get(aid)
        if a is None or a.state not in PUBLIC_STATES:
            raise self._err(f"Assignment {aid} does not exist.", "AWS.MechanicalTurk.AssignmentDoesNotExist")
        return a
