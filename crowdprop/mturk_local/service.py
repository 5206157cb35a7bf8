"""An in-memory MTurk requester service with simulated workers.

:class:`LocalMTurk` implements the MTurk operations crowdprop uses with the
semantics of MTurk's API reference (botocore's ``mturk/2017-01-17`` service
model): HIT types, HITs, assignments, approval and rejection, bonuses,
qualifications, worker blocks, the account balance. :mod:`.server` puts it
behind an HTTP endpoint that boto3's ``mturk`` client talks to unchanged.

Simulated workers
-----------------
When a HIT is created, ``MaxAssignments`` distinct workers of the
:class:`~crowdprop.replay.workers.WorkerPool` (minus blocked workers and workers
whose qualifications do not meet the HIT's requirements) preview it. After
``work_delay`` real seconds each accepts and submits: the questions are read
from the page (fieldsets with ``data-question-id`` / ``data-mask-id``) and each
is answered ``pool.answer(worker, f"{key}:{question_id}", truth[mask_id])``
where ``key`` names what the HIT asks (:func:`crowdprop.crowd.base.content_key`
of its question ids; its ``UniqueRequestToken``, else ``#<n>`` for the n-th HIT
created, when the page has no questions): answers depend on the pool's seed and
the requests, never on ids, and two copies of a campaign asking the same
questions get the same answers.
``AcceptTime`` is the server clock at that moment and ``SubmitTime`` is
``AcceptTime + pool.seconds(worker, key, n_questions)``.

Nobody works on a HIT when ``simulate=False``, when its ``RequesterAnnotation``
contains ``manual`` (:func:`manual_annotation`; never a crowdprop campaign's own
``crowdprop:...`` annotation), or when its question is not an HTMLQuestion: those HITs are
done in a browser through the worker page (:meth:`LocalMTurk.accept`,
:meth:`LocalMTurk.external_submit`). A share ``unanswered_share`` of assignment
slots (drawn per HIT from the pool seed) is never taken, so expiry and re-asking
can be exercised. Workers who have only previewed when the HIT expires drop out.

Ids
---
HIT, assignment and qualification type ids are random (:mod:`secrets`), in
MTurk's style (30 upper-case letters and digits): nobody can guess the id of
another worker's assignment or of work yet to come. An assignment id is only
ever made by the endpoint; a browser worker submits the one :meth:`accept`
gave them, under their own worker id.

Qualification tests
-------------------
A qualification type created with a ``Test`` (QuestionForm) and an
``AnswerKey`` is graded as MTurk grades it (:mod:`.qualification`). Before
simulated workers are picked for a HIT whose type requires such a
qualification, every simulated worker who has neither taken the test nor been
blocked takes it once (no retries): questions named ``mask-<mask_id>`` are
answered ``pool.answer(worker, "qualification:" + QuestionIdentifier,
truth[mask_id])``, the answers are scored with the AnswerKey, and the
qualification is granted with the resulting IntegerValue, so the HIT's
requirement (e.g. ``GreaterThanOrEqualTo 90``) decides whether the worker may
work. ``DoesNotExist`` requirements keep out workers holding the qualification
(a campaign's soft block).

Money
-----
Rewards, bonuses and MTurk's commission (:class:`~crowdprop.crowd.base.Fees`)
are charged when an assignment is approved (explicitly or automatically after
``AutoApprovalDelayInSeconds`` on the server clock) and when a bonus is sent;
rejected work is not charged. Amounts are kept in integer cents.

Time
----
Every timestamp comes from ``clock`` (epoch seconds; :class:`ManualClock` for
tests). ``work_delay`` is measured in real (monotonic) seconds. Work is done
lazily: pending work, auto-approvals and expiries are brought up to date at the
start of every operation.

Modules
-------
:class:`LocalMTurk` is assembled from one class per responsibility, all over the
tables of :class:`~.core.ServiceCore` (:mod:`.core`: state, errors, ids, paging,
response structures, charging):

========================  ==========================================================
:mod:`.records`           records (HIT type, HIT, assignment), limits, money text
:mod:`.params`            parameter checks with MTurk's error codes
:mod:`.simulation`        qualification checks, simulated workers, the clock
:mod:`.hits`              HIT type and HIT operations
:mod:`.assignments`       assignment, bonus and balance operations
:mod:`.worker_ops`        qualification type, qualification and worker block operations
:mod:`.browser`           a person in a browser: accept, submit, take a test
:mod:`.service`           this module: the operation table, :meth:`LocalMTurk.call`, the ledger
========================  ==========================================================
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import MTurkError
from .assignments import AssignmentOperations
from .browser import BrowserWorker
from .hits import HitOperations
from .records import (ALL_OPERATIONS, ASSIGNMENT_ID_NOT_AVAILABLE, TARGET_PREFIX, ManualClock, manual_annotation,
                      usd_text)
from .worker_ops import WorkerOperations

__all__ = ["ALL_OPERATIONS", "ASSIGNMENT_ID_NOT_AVAILABLE", "SUPPORTED_OPERATIONS", "TARGET_PREFIX", "LocalMTurk",
           "ManualClock", "MTurkError", "manual_annotation"]


class LocalMTurk(HitOperations, AssignmentOperations, WorkerOperations, BrowserWorker):
    """MTurk's requester API in memory, with simulated workers answering from ground truth.

    Parameters
    ----------
    truth : mapping of int to bool
        ``mask_id`` -> is the mask correct (the true answer to "is this mask correct?").
    pool : WorkerPool
        The simulated workers; their answers are ``pool.answer(...)``.
    fees : Fees
        MTurk's commission.
    balance : float
        Starting ``AvailableBalance`` in dollars (the sandbox always says 10000.00).
    faults : FaultConfig or None
        Faults injected by the HTTP endpoint on API calls.
    images_dir : path or None
        Served under ``/images/`` by the HTTP endpoint.
    clock : callable returning epoch seconds, or None for ``time.time``.
    work_delay : float
        Real seconds between a HIT's creation and its simulated submissions
        (0: submitted within the CreateHIT call).
    simulate : bool
        ``False`` turns simulated workers off (the endpoint is an answer sink for
        a browser).
    unanswered_share : float
        Share of assignment slots no simulated worker ever takes.
    late_share, late_delay : float
        A share ``late_share`` of the simulated workers who take a slot accept it when
        their work is due but submit only ``late_delay`` real seconds later: after the
        HIT expired, if it did meanwhile (MTurk takes work accepted before expiry until
        the assignment duration runs out). Drawn per HIT from the pool seed.
    auto_approve_after : float or None
        Approve submitted work on its own this many seconds (server clock) after it is
        submitted when that comes before the HIT type's ``AutoApprovalDelayInSeconds``:
        stands for a requester who does not look at the work in time (a controller
        stopped longer than the delay).
    """

    def call(self, operation: str, params: Mapping[str, Any] | None = None) -> dict:
        """Run one API operation; raises :class:`MTurkError` the way MTurk answers errors."""
        params = dict(params or {})
        handler = _OPERATIONS.get(operation)
        if handler is None:
            if operation in ALL_OPERATIONS:
                raise MTurkError(f"The operation {operation} is not supported by the local MTurk endpoint.",
                                 "AWS.NotImplemented")
            raise MTurkError(f"Operation {operation} is not supported.", type_="UnknownOperationException")
        with self._lock:
            self._advance()
            return handler(self, params)

    # ------------------------------------------------------------------ the ledger
    def ledger(self, *, entries: bool = True) -> dict:
        """Money and bookkeeping: what was charged, and counts that must stay at most 1."""
        with self._lock:
            self._advance()
            sums: dict[str, int] = {}
            for e in self._entries:
                sums[e["kind"]] = sums.get(e["kind"], 0) + e["cents"]
            states: dict[str, int] = {}
            for a in self._assignments.values():
                states[a.state] = states.get(a.state, 0) + 1
            out = {
                "initial_balance_usd": usd_text(self._initial_cents),
                "balance_usd": usd_text(self._balance_cents),
                "spent_usd": usd_text(self._initial_cents - self._balance_cents),
                "rewards_usd": usd_text(sums.get("reward", 0)),
                "bonuses_usd": usd_text(sums.get("bonus", 0)),
                "fees_usd": usd_text(sums.get("fee", 0) + sums.get("bonus_fee", 0)),
                "hits": sum(not h.deleted for h in self._hits.values()),
                "hits_created": len(self._hits),
                "hits_deleted": sum(h.deleted for h in self._hits.values()),
                "assignments": states,
                "approvals": sum(self._approvals.values()),
                "approve_calls": sum(self._approve_calls.values()),
                "approved_more_than_once": sorted(k for k, v in self._approvals.items() if v > 1),
                "bonuses": sum(self._bonus_counts.values()),
                "bonus_counts": dict(self._bonus_counts),
                "tokens_with_several_hits": sorted(k for k, v in self._hits_per_token.items() if len(v) > 1),
                "blocked_workers": sorted(self._blocks),
                "qualification_tests_taken": len(self._test_takers),
            }
            if self.fault_injector is not None:
                out["faults"] = dict(self.fault_injector.counts)
            if entries:
                out["entries"] = [dict(e) for e in self._entries]
            return out

    def approvals(self, assignment_id: str) -> int:
        """How many times an assignment was approved (explicitly or automatically)."""
        with self._lock:
            return self._approvals.get(assignment_id, 0)


_OPERATIONS: dict[str, Callable[[LocalMTurk, Mapping], dict]] = {
    "CreateHITType": LocalMTurk._op_create_hit_type,
    "CreateHIT": LocalMTurk._op_create_hit,
    "CreateHITWithHITType": LocalMTurk._op_create_hit_with_hit_type,
    "GetHIT": LocalMTurk._op_get_hit,
    "ListHITs": LocalMTurk._op_list_hits,
    "ListReviewableHITs": LocalMTurk._op_list_reviewable_hits,
    "UpdateHITReviewStatus": LocalMTurk._op_update_hit_review_status,
    "UpdateExpirationForHIT": LocalMTurk._op_update_expiration_for_hit,
    "CreateAdditionalAssignmentsForHIT": LocalMTurk._op_create_additional_assignments_for_hit,
    "DeleteHIT": LocalMTurk._op_delete_hit,
    "ListAssignmentsForHIT": LocalMTurk._op_list_assignments_for_hit,
    "GetAssignment": LocalMTurk._op_get_assignment,
    "ApproveAssignment": LocalMTurk._op_approve_assignment,
    "RejectAssignment": LocalMTurk._op_reject_assignment,
    "SendBonus": LocalMTurk._op_send_bonus,
    "ListBonusPayments": LocalMTurk._op_list_bonus_payments,
    "GetAccountBalance": LocalMTurk._op_get_account_balance,
    "CreateQualificationType": LocalMTurk._op_create_qualification_type,
    "GetQualificationType": LocalMTurk._op_get_qualification_type,
    "AssociateQualificationWithWorker": LocalMTurk._op_associate_qualification_with_worker,
    "DisassociateQualificationFromWorker": LocalMTurk._op_disassociate_qualification_from_worker,
    "ListWorkersWithQualificationType": LocalMTurk._op_list_workers_with_qualification_type,
    "ListQualificationTypes": LocalMTurk._op_list_qualification_types,
    "GetQualificationScore": LocalMTurk._op_get_qualification_score,
    "CreateWorkerBlock": LocalMTurk._op_create_worker_block,
    "DeleteWorkerBlock": LocalMTurk._op_delete_worker_block,
    "ListWorkerBlocks": LocalMTurk._op_list_worker_blocks,
}
SUPPORTED_OPERATIONS = tuple(sorted(_OPERATIONS))
