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
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import logging
import math
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..crowd.base import Fees, content_key
from ..errors import MTurkError
from ..replay.workers import WorkerPool, rng_for
from .faults import FaultConfig, FaultInjector
from .pages import PageQuestion, QuestionXMLError, answers_xml, page_questions, parse_question_xml
from .qualification import AnswerKey, QualificationXMLError, TestQuestion, parse_answer_key, parse_test

log = logging.getLogger(__name__)

TARGET_PREFIX = "MTurkRequesterServiceV20170117"
ASSIGNMENT_ID_NOT_AVAILABLE = "ASSIGNMENT_ID_NOT_AVAILABLE"
DAY = 86400
TOKEN_LIFETIME_S = DAY
"""``UniqueRequestToken`` is remembered for 24 hours."""
MAX_LIFETIME_S = 365 * DAY
MIN_DURATION_S = 30
MAX_AUTO_APPROVAL_S = 30 * DAY
DEFAULT_AUTO_APPROVAL_S = 30 * DAY
MAX_ASSIGNMENTS = 1_000_000
MAX_QUALIFICATION_REQUIREMENTS = 10
SYSTEM_QUALIFICATIONS = {
    "00000000000000000040": "Worker_NumberHITsApproved",
    "000000000000000000L0": "Worker_PercentAssignmentsApproved",
    "00000000000000000071": "Worker_Locale",
    "00000000000000000060": "Worker_Adult",
    "2F1QJWKUDD8XADTFD2Q0G6UTO95ALH": "Masters",
    "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6": "Masters (sandbox)",
}
"""System qualifications: every simulated worker meets them."""

ALL_OPERATIONS = (
    "AcceptQualificationRequest", "ApproveAssignment", "AssociateQualificationWithWorker",
    "CreateAdditionalAssignmentsForHIT", "CreateHIT", "CreateHITType", "CreateHITWithHITType",
    "CreateQualificationType", "CreateWorkerBlock", "DeleteHIT", "DeleteQualificationType",
    "DeleteWorkerBlock", "DisassociateQualificationFromWorker", "GetAccountBalance", "GetAssignment",
    "GetFileUploadURL", "GetHIT", "GetQualificationScore", "GetQualificationType", "ListAssignmentsForHIT",
    "ListBonusPayments", "ListHITs", "ListHITsForQualificationType", "ListQualificationRequests",
    "ListQualificationTypes", "ListReviewPolicyResultsForHIT", "ListReviewableHITs", "ListWorkerBlocks",
    "ListWorkersWithQualificationType", "NotifyWorkers", "RejectAssignment", "RejectQualificationRequest",
    "SendBonus", "SendTestEventNotification", "UpdateExpirationForHIT", "UpdateHITReviewStatus",
    "UpdateHITTypeOfHIT", "UpdateNotificationSettings", "UpdateQualificationType",
)
"""Every operation of MTurk's 2017-01-17 API (botocore's service model)."""

_ENTITY_ID = re.compile(r"^[A-Z0-9]+$")
_WORKER_ID = re.compile(r"^A[A-Z0-9]{1,63}$")
"""MTurk's WorkerId (``^A[A-Z0-9]+$``, at most 64 characters): what a browser worker may call themself."""
_ID_ALPHABET = string.ascii_uppercase + string.digits
_CURRENCY = re.compile(r"^[0-9]+(\.)?[0-9]{0,2}$")
_PUBLIC_STATES = ("Submitted", "Approved", "Rejected")


class ManualClock:
    """A clock that only moves when told to (epoch seconds)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += float(seconds)
        return self.now


def _cents(text: str, field: str) -> int:
    if not isinstance(text, str) or not _CURRENCY.match(text):
        raise MTurkError(f"Value '{text}' for {field} is invalid: expected an amount like 0.20", "AWS.ParameterOutOfRange")
    try:
        return int((Decimal(text) * 100).to_integral_value())
    except InvalidOperation:  # pragma: no cover - the pattern already excludes these
        raise MTurkError(f"Value '{text}' for {field} is invalid", "AWS.ParameterOutOfRange") from None


def _usd(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _to_cents(usd: float) -> int:
    from ..money import cents

    return cents(usd)


@dataclass
class _HitType:
    id: str
    title: str
    description: str
    keywords: str | None
    reward_cents: int
    assignment_duration: int
    auto_approval_delay: int
    requirements: list[dict]


@dataclass
class _Hit:
    id: str
    seq: int
    type: _HitType
    group_id: str
    question: str
    kind: str
    html: str | None
    questions: list[PageQuestion]
    max_assignments: int
    creation: float
    expiration: float
    annotation: str | None
    token: str | None
    key: str
    assignments: list[str] = field(default_factory=list)
    deleted: bool = False
    reviewing: bool = False
    review_status: str = "NotReviewed"
    simulated: bool = False


@dataclass
class _Assignment:
    id: str
    hit_id: str
    worker_id: str
    state: str
    """Public: Submitted | Approved | Rejected. Internal: Previewing (a simulated
    worker before accepting), Accepted (a browser worker before submitting),
    Dropped (previewed, never accepted), Abandoned (accepted, not submitted in time)."""
    source: str
    """``simulated`` or ``browser``."""
    worker_index: int | None = None
    due: float = 0.0
    """Simulated: monotonic time at which the worker accepts and submits."""
    seq: int = -1
    """Submission order (listing order)."""
    accept_time: float | None = None
    submit_time: float | None = None
    deadline: float | None = None
    auto_approval_time: float | None = None
    approval_time: float | None = None
    rejection_time: float | None = None
    answer: str | None = None
    feedback: str | None = None
    late: bool = False
    """Simulated: accepts when due, submits ``late_delay`` real seconds later."""


def manual_annotation(annotation: str | None) -> bool:
    """Whether a HIT's RequesterAnnotation leaves it for a browser: it contains "manual",
    and it is not crowdprop's own ``crowdprop:<campaign name>:r<round>:<token>``, whose
    campaign name is free text (a campaign named "manual-vs-auto" would otherwise wait for
    nobody a whole round timeout per round; a campaign's HITs are left for a browser with
    ``crowdprop mturk-local --no-simulate``)."""
    text = (annotation or "").lower()
    return "manual" in text and not text.startswith("crowdprop:")


class LocalMTurk:
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
        self._initial_cents = _to_cents(balance)
        self._balance_cents = self._initial_cents
        self._hit_types: dict[str, _HitType] = {}
        self._hits: dict[str, _Hit] = {}
        self._assignments: dict[str, _Assignment] = {}
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

    # ------------------------------------------------------------------ plumbing
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

    def _err(self, message: str, code: str | None = None, **kw) -> MTurkError:
        # MTurk ends every message with the server time in milliseconds.
        return MTurkError(f"{message} ({int(self.clock() * 1000)})", code, **kw)

    def _new_id(self, kind: str, length: int = 30) -> str:
        """A fresh random id of ``length`` upper-case letters and digits (``kind`` names what it is for)."""
        while True:
            new = "3" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length - 1))
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
                raise self._err("The pagination token is invalid.", "AWS.MechanicalTurk.InvalidPaginationToken") from None
        rest = [(k, v) for k, v in items if k > after]
        page = rest[:mr]
        nxt = self._token(kind, page[-1][0]) if len(rest) > mr else None
        return [v for _, v in page], nxt

    # ------------------------------------------------------------------ validation
    def _str(self, p: Mapping, name: str, *, required: bool = False, max_len: int | None = None,
             min_len: int = 0) -> str | None:
        v = p.get(name)
        if v is None:
            if required:
                raise self._err(f"Parameter {name} is required.", "AWS.MissingParameters")
            return None
        if not isinstance(v, str):
            raise self._err(f"Value for {name} must be a string.", "AWS.ParameterOutOfRange")
        if len(v) < min_len or (max_len is not None and len(v) > max_len):
            raise self._err(f"Value for {name} must be between {min_len} and {max_len} characters long.",
                            "AWS.ParameterOutOfRange")
        return v

    def _int(self, p: Mapping, name: str, *, required: bool = False, default: int | None = None,
             lo: int | None = None, hi: int | None = None) -> int | None:
        v = p.get(name)
        if v is None:
            if required:
                raise self._err(f"Parameter {name} is required.", "AWS.MissingParameters")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise self._err(f"Value for {name} must be an integer.", "AWS.ParameterOutOfRange")
        v = int(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self._err(f"Value {v} for {name} is out of range: must be between {lo} and {hi}.",
                            "AWS.ParameterOutOfRange")
        return v

    def _entity(self, p: Mapping, name: str) -> str:
        v = self._str(p, name, required=True, min_len=1, max_len=64)
        if not _ENTITY_ID.match(v):
            raise self._err(f"Value '{v}' for {name} is invalid.", "AWS.ParameterOutOfRange")
        return v

    def _worker(self, p: Mapping, name: str = "WorkerId") -> str:
        # MTurk worker ids match ^A[A-Z0-9]+$; simulated ids need not, so only the length is checked.
        return self._str(p, name, required=True, min_len=1, max_len=64)

    def _requirements(self, reqs: Any) -> list[dict]:
        if reqs is None:
            return []
        if not isinstance(reqs, list) or len(reqs) > MAX_QUALIFICATION_REQUIREMENTS:
            raise self._err(f"A HIT can have between 0 and {MAX_QUALIFICATION_REQUIREMENTS} QualificationRequirements.",
                            "AWS.ParameterOutOfRange")
        out = []
        for r in reqs:
            if not isinstance(r, dict):
                raise self._err("A QualificationRequirement must be a structure.", "AWS.ParameterOutOfRange")
            qt = self._str(r, "QualificationTypeId", required=True, min_len=1)
            comp = self._str(r, "Comparator", required=True)
            ints = r.get("IntegerValues")
            locs = r.get("LocaleValues")
            if comp not in ("LessThan", "LessThanOrEqualTo", "GreaterThan", "GreaterThanOrEqualTo", "EqualTo",
                            "NotEqualTo", "Exists", "DoesNotExist", "In", "NotIn"):
                raise self._err(f"Comparator {comp} is invalid.", "AWS.ParameterOutOfRange")
            if comp in ("Exists", "DoesNotExist") and (ints or locs):
                raise self._err(f"IntegerValues and LocaleValues must not be given with Comparator {comp}.",
                                "AWS.ParameterOutOfRange")
            if comp in ("In", "NotIn"):
                n = len(ints or []) + len(locs or [])
                if not 1 <= n <= 30:
                    raise self._err(f"Comparator {comp} needs between 1 and 30 values.", "AWS.ParameterOutOfRange")
            elif comp not in ("Exists", "DoesNotExist"):
                if len(ints or []) + len(locs or []) != 1:
                    raise self._err(f"Comparator {comp} needs exactly one IntegerValue or LocaleValue.",
                                    "AWS.ParameterOutOfRange")
            if qt not in SYSTEM_QUALIFICATIONS and qt not in self._qual_types:
                raise self._err(f"QualificationType {qt} does not exist.",
                                "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
            out.append({k: r[k] for k in ("QualificationTypeId", "Comparator", "IntegerValues", "LocaleValues",
                                          "RequiredToPreview", "ActionsGuarded") if k in r})
        return out

    # ------------------------------------------------------------------ workers
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

    def _can_work(self, worker_id: str, hit: _Hit) -> bool:
        if worker_id in self._blocks or not self._qualified(worker_id, hit.type.requirements):
            return False
        return all(self._assignments[a].worker_id != worker_id or self._assignments[a].state in ("Dropped",)
                   for a in hit.assignments)

    def _schedule(self, hit: _Hit, slots: int, pick_key: str) -> None:
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
            a = _Assignment(self._new_id("assignment"), hit.id, self.pool.worker_ids[w], "Previewing",
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

    def _simulated_work(self, a: _Assignment, hit: _Hit, now: float, accept_time: float | None = None) -> None:
        w = a.worker_index
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

    def _submit(self, a: _Assignment, hit: _Hit, answer: str, *, accept_time: float, submit_time: float) -> None:
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
            if a.state == "Accepted" and now < a.deadline and not self._hits[a.hit_id].deleted:
                self._simulated_work(a, self._hits[a.hit_id], now, accept_time=a.accept_time)
        for aid in [x for x in self._accepted if now >= self._assignments[x].deadline]:
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

    # ------------------------------------------------------------------ money
    def _charge(self, cents: int, kind: str, a: _Assignment, when: float) -> None:
        self._balance_cents -= cents
        self._entries.append({"time": when, "kind": kind, "usd": _usd(cents), "cents": cents,
                              "hit_id": a.hit_id, "assignment_id": a.id, "worker_id": a.worker_id})

    def _approve(self, a: _Assignment, hit: _Hit, when: float, *, feedback: str | None, auto: bool) -> None:
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
    def _status(self, hit: _Hit, now: float) -> tuple[str, int, int, int]:
        pending = done = completed = 0
        expired = now >= hit.expiration
        for aid in hit.assignments:
            s = self._assignments[aid].state
            if s == "Accepted" or (s == "Previewing" and not expired):
                # simulated workers who only previewed drop out when the HIT expires
                pending += 1
            elif s in _PUBLIC_STATES:
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

    def _hit_view(self, hit: _Hit) -> dict:
        status, pending, available, completed = self._status(hit, self.clock())
        t = hit.type
        out = {
            "HITId": hit.id, "HITTypeId": t.id, "HITGroupId": hit.group_id, "CreationTime": hit.creation,
            "Title": t.title, "Description": t.description, "Question": hit.question, "HITStatus": status,
            "MaxAssignments": hit.max_assignments, "Reward": _usd(t.reward_cents),
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
    def _assignment_view(a: _Assignment) -> dict:
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

    def _get_hit(self, hit_id: str) -> _Hit:
        hit = self._hits.get(hit_id)
        if hit is None or hit.deleted:
            raise self._err(f"Hit {hit_id} does not exist.", "AWS.MechanicalTurk.HITDoesNotExist")
        return hit

    def _get_assignment(self, aid: str) -> _Assignment:
        a = self._assignments.get(aid)
        if a is None or a.state not in _PUBLIC_STATES:
            raise self._err(f"Assignment {aid} does not exist.", "AWS.MechanicalTurk.AssignmentDoesNotExist")
        return a

    # ------------------------------------------------------------------ HIT types and HITs
    def _op_create_hit_type(self, p: Mapping) -> dict:
        return {"HITTypeId": self._hit_type(p).id}

    def _hit_type(self, p: Mapping) -> _HitType:
        title = self._str(p, "Title", required=True, min_len=1, max_len=128)
        description = self._str(p, "Description", required=True, min_len=1, max_len=2000)
        keywords = self._str(p, "Keywords", max_len=1000)
        reward = _cents(self._str(p, "Reward", required=True), "Reward")
        if reward < 1:
            raise self._err("The reward must be at least 0.01 USD.", "AWS.ParameterOutOfRange")
        duration = self._int(p, "AssignmentDurationInSeconds", required=True, lo=MIN_DURATION_S, hi=MAX_LIFETIME_S)
        auto = self._int(p, "AutoApprovalDelayInSeconds", default=DEFAULT_AUTO_APPROVAL_S, lo=0,
                         hi=MAX_AUTO_APPROVAL_S)
        reqs = self._requirements(p.get("QualificationRequirements"))
        canon = json.dumps([title, description, keywords, reward, duration, auto, reqs], sort_keys=True)
        tid = "3" + base64.b32encode(hashlib.blake2b(canon.encode(), digest_size=20).digest()).decode()[:29]
        if tid not in self._hit_types:
            self._hit_types[tid] = _HitType(tid, title, description, keywords, reward, duration, auto, reqs)
        return self._hit_types[tid]

    def _op_create_hit(self, p: Mapping) -> dict:
        t = self._hit_type(p)
        return self._create_hit(p, t)

    def _op_create_hit_with_hit_type(self, p: Mapping) -> dict:
        tid = self._entity(p, "HITTypeId")
        t = self._hit_types.get(tid)
        if t is None:
            raise self._err(f"HITType {tid} does not exist.", "AWS.MechanicalTurk.HITTypeDoesNotExist")
        return self._create_hit(p, t)

    def _create_hit(self, p: Mapping, t: _HitType) -> dict:
        now = self.clock()
        max_asg = self._int(p, "MaxAssignments", default=1, lo=1, hi=MAX_ASSIGNMENTS)
        lifetime = self._int(p, "LifetimeInSeconds", required=True, lo=MIN_DURATION_S, hi=MAX_LIFETIME_S)
        annotation = self._str(p, "RequesterAnnotation", max_len=255)
        token = self._str(p, "UniqueRequestToken", min_len=1, max_len=64)
        if p.get("HITLayoutId") is not None:
            raise self._err("HITLayoutId is not supported by the local MTurk endpoint; send a Question.",
                            "AWS.NotImplemented")
        question = self._str(p, "Question", required=True, min_len=1)
        try:
            doc = parse_question_xml(question)
        except QuestionXMLError as e:
            raise self._err(str(e), "AWS.MechanicalTurk.XMLParseError") from None
        if token is not None:
            seen = self._hit_tokens.get(token)
            if seen is not None and now - seen[1] < TOKEN_LIFETIME_S:
                raise self._err(f'The HIT with ID "{seen[0]}" already exists.', "AWS.MechanicalTurk.HitAlreadyExists")
        hid = self._new_id("hit")
        n = next(self._hit_count)
        hit = _Hit(hid, next(self._seq), t, "3" + t.id[1:][::-1], question, doc.kind, doc.html,
                   page_questions(doc.html) if doc.html is not None else [], max_asg, now, now + lifetime,
                   annotation, token, token if token is not None else f"#{n}")
        if hit.questions:  # simulated answers follow what the HIT asks (crowd.base.content_key)
            hit.key = content_key([q.question_id for q in hit.questions])
        hit.simulated = doc.kind == "HTMLQuestion" and not manual_annotation(annotation)
        self._hits[hid] = hit
        if token is not None:
            self._hit_tokens[token] = (hid, now)
            self._hits_per_token.setdefault(token, []).append(hid)
        self._schedule(hit, max_asg, hit.key)
        self._advance()
        log.debug("HIT %s created (%d assignments, %d questions)", hid, max_asg, len(hit.questions))
        return {"HIT": self._hit_view(hit)}

    def _op_get_hit(self, p: Mapping) -> dict:
        return {"HIT": self._hit_view(self._get_hit(self._entity(p, "HITId")))}

    def _op_list_hits(self, p: Mapping) -> dict:
        items = sorted((h.seq, h) for h in self._hits.values() if not h.deleted)
        page, nxt = self._page("hits", items, p)
        out = {"NumResults": len(page), "HITs": [self._hit_view(h) for h in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_list_reviewable_hits(self, p: Mapping) -> dict:
        want = p.get("Status") or "Reviewable"
        tid = p.get("HITTypeId")
        now = self.clock()
        items = sorted((h.seq, h) for h in self._hits.values() if not h.deleted
                       and (tid is None or h.type.id == tid) and self._status(h, now)[0] == want)
        page, nxt = self._page("reviewable", items, p)
        out = {"NumResults": len(page), "HITs": [self._hit_view(h) for h in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_update_hit_review_status(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        status = self._status(hit, self.clock())[0]
        revert = bool(p.get("Revert", False))
        if (status, revert) not in (("Reviewable", False), ("Reviewing", True)):
            raise self._err(f"This HIT is currently in the state '{status}'.", "AWS.MechanicalTurk.InvalidHITState")
        hit.reviewing = not revert
        return {}

    def _op_update_expiration_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        at = p.get("ExpireAt")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise self._err("Parameter ExpireAt is required.", "AWS.MissingParameters")
        now = self.clock()
        hit.expiration = max(float(at), now)
        self._advance()
        return {}

    def _op_create_additional_assignments_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        n = self._int(p, "NumberOfAdditionalAssignments", required=True, lo=1, hi=MAX_ASSIGNMENTS)
        token = self._str(p, "UniqueRequestToken", min_len=1, max_len=64)
        now = self.clock()
        if token is not None:
            seen = self._extra_tokens.get(token)
            if seen is not None and now - seen < TOKEN_LIFETIME_S:
                raise self._err(f'The idempotency token "{token}" has already been processed.',
                                "AWS.MechanicalTurk.DuplicateRequest")
        if hit.max_assignments < 10 <= hit.max_assignments + n:
            raise self._err("HITs created with fewer than 10 assignments cannot be extended to 10 or more.",
                            "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease")
        if token is not None:
            self._extra_tokens[token] = now
        hit.max_assignments += n
        self._schedule(hit, n, f"{hit.key}#extend{len(hit.assignments)}")
        self._advance()
        return {}

    def _op_delete_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        status = self._status(hit, self.clock())[0]
        # MTurk's answer, whether the state is wrong or some submitted work is not settled yet
        if status not in ("Reviewable", "Reviewing") or any(
                self._assignments[a].state == "Submitted" for a in hit.assignments):
            raise self._err(f"This HIT is currently in the state '{status}'.  This operation can be called with a "
                            "status of: Reviewing, Reviewable", "AWS.MechanicalTurk.InvalidHITState")
        hit.deleted = True
        return {}

    # ------------------------------------------------------------------ assignments
    def _op_list_assignments_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        statuses = p.get("AssignmentStatuses") or list(_PUBLIC_STATES)
        bad = [s for s in statuses if s not in _PUBLIC_STATES]
        if bad:
            raise self._err(f"AssignmentStatus {bad[0]} is invalid.", "AWS.ParameterOutOfRange")
        items = sorted((a.seq, a) for a in (self._assignments[x] for x in hit.assignments) if a.state in statuses)
        page, nxt = self._page(f"asg-{hit.id}", items, p)
        out = {"NumResults": len(page), "Assignments": [self._assignment_view(a) for a in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_get_assignment(self, p: Mapping) -> dict:
        a = self._get_assignment(self._entity(p, "AssignmentId"))
        return {"Assignment": self._assignment_view(a), "HIT": self._hit_view(self._hits[a.hit_id])}

    def _op_approve_assignment(self, p: Mapping) -> dict:
        aid = self._entity(p, "AssignmentId")
        feedback = self._str(p, "RequesterFeedback", max_len=1024)
        override = bool(p.get("OverrideRejection", False))
        self._approve_calls[aid] = self._approve_calls.get(aid, 0) + 1
        a = self._get_assignment(aid)
        hit = self._hits[a.hit_id]
        if hit.deleted:
            raise self._err(f"Hit {hit.id} does not exist.", "AWS.MechanicalTurk.HITDoesNotExist")
        if not (a.state == "Submitted" or (a.state == "Rejected" and override)):
            allowed = "Submitted" + (", Rejected" if override else "")
            raise self._err(f"This operation can be called with a status of: {allowed}",
                            "AWS.MechanicalTurk.InvalidAssignmentState")
        self._approve(a, hit, self.clock(), feedback=feedback, auto=False)
        return {}

    def _op_reject_assignment(self, p: Mapping) -> dict:
        aid = self._entity(p, "AssignmentId")
        feedback = self._str(p, "RequesterFeedback", required=True, max_len=1024)
        a = self._get_assignment(aid)
        if a.state != "Submitted":
            raise self._err("This operation can be called with a status of: Submitted",
                            "AWS.MechanicalTurk.InvalidAssignmentState")
        a.state = "Rejected"
        a.rejection_time = self.clock()
        a.feedback = feedback
        return {}

    def _op_send_bonus(self, p: Mapping) -> dict:
        worker = self._worker(p)
        amount = _cents(self._str(p, "BonusAmount", required=True), "BonusAmount")
        aid = self._entity(p, "AssignmentId")
        reason = self._str(p, "Reason", required=True, min_len=1, max_len=4096)
        token = self._str(p, "UniqueRequestToken", min_len=1, max_len=64)
        now = self.clock()
        if amount < 1:
            raise self._err("The bonus amount must be at least 0.01 USD.", "AWS.ParameterOutOfRange")
        a = self._get_assignment(aid)
        if a.worker_id != worker:
            raise self._err(f"Assignment {aid} was not done by worker {worker}.", "AWS.ParameterOutOfRange")
        if token is not None:
            seen = self._bonus_tokens.get(token)
            if seen is not None and now - seen < TOKEN_LIFETIME_S:
                raise self._err(f'The idempotency token "{token}" has already been processed.',
                                "AWS.MechanicalTurk.DuplicateRequest")
        fee = self.fees.bonus_fee_cents(amount)
        if self._balance_cents < amount + fee:
            raise self._err("You do not have enough funds to pay this bonus.", "AWS.MechanicalTurk.InsufficientFunds")
        if token is not None:
            self._bonus_tokens[token] = now
        self._charge(amount, "bonus", a, now)
        self._charge(fee, "bonus_fee", a, now)
        self._bonus_counts[aid] = self._bonus_counts.get(aid, 0) + 1
        self._bonuses.append({"WorkerId": worker, "BonusAmount": _usd(amount), "AssignmentId": aid,
                              "Reason": reason, "GrantTime": now, "_hit": a.hit_id})
        return {}

    def _op_list_bonus_payments(self, p: Mapping) -> dict:
        hid, aid = p.get("HITId"), p.get("AssignmentId")
        if (hid is None) == (aid is None):
            raise self._err("Either HITId or AssignmentId must be given.", "AWS.MissingParameters")
        if hid is not None:
            self._get_hit(hid)
        rows = [b for b in self._bonuses if (hid is not None and b["_hit"] == hid) or
                (aid is not None and b["AssignmentId"] == aid)]
        page, nxt = self._page("bonus", list(enumerate(rows)), p)
        out = {"NumResults": len(page), "BonusPayments": [{k: v for k, v in b.items() if k != "_hit"} for b in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_get_account_balance(self, p: Mapping) -> dict:
        return {"AvailableBalance": _usd(max(0, self._balance_cents))}

    # ------------------------------------------------------------------ qualifications and blocks
    def _op_create_qualification_type(self, p: Mapping) -> dict:
        name = self._str(p, "Name", required=True, min_len=1, max_len=128)
        desc = self._str(p, "Description", required=True, max_len=2000)
        status = self._str(p, "QualificationTypeStatus", required=True)
        if status not in ("Active", "Inactive"):
            raise self._err(f"QualificationTypeStatus {status} is invalid.", "AWS.ParameterOutOfRange")
        test = self._str(p, "Test")  # sizes (64 KB) are checked in bytes by the parsers
        answer_key = self._str(p, "AnswerKey")
        auto = bool(p.get("AutoGranted", False))
        duration = self._int(p, "TestDurationInSeconds", lo=1, hi=MAX_LIFETIME_S)
        self._int(p, "RetryDelayInSeconds", lo=0, hi=MAX_LIFETIME_S)
        parsed = None
        if test is not None:
            if auto:
                raise self._err("AutoGranted cannot be true when a Test is given.", "AWS.ParameterOutOfRange")
            if duration is None:
                raise self._err("TestDurationInSeconds is required with a Test.", "AWS.MissingParameters")
            try:
                questions = parse_test(test)
                key = parse_answer_key(answer_key, questions) if answer_key is not None else None
            except QualificationXMLError as e:
                raise self._err(str(e), "AWS.MechanicalTurk.XMLParseError") from None
            parsed = (questions, key)
        elif answer_key is not None:
            raise self._err("An AnswerKey needs a Test.", "AWS.ParameterOutOfRange")
        elif duration is not None:
            raise self._err("TestDurationInSeconds needs a Test.", "AWS.ParameterOutOfRange")
        if any(q["Name"] == name for q in self._qual_types.values()):
            raise self._err("You have already created a QualificationType with this name. A QualificationType's name "
                            "must be unique among all of the QualificationTypes created by the same user.",
                            "AWS.MechanicalTurk.QualificationTypeAlreadyExists")
        qid = self._new_id("qualification")
        q = {"QualificationTypeId": qid, "CreationTime": self.clock(), "Name": name, "Description": desc,
             "QualificationTypeStatus": status, "IsRequestable": bool(test is not None or auto),
             "AutoGranted": auto}
        for k in ("Keywords", "RetryDelayInSeconds", "Test", "AnswerKey", "TestDurationInSeconds"):
            if p.get(k) is not None:
                q[k] = p[k]
        if q["AutoGranted"]:
            q["AutoGrantedValue"] = int(p.get("AutoGrantedValue", 1))
        self._qual_types[qid] = q
        if parsed is not None:
            self._tests[qid] = parsed
        return {"QualificationType": dict(q)}

    def _op_list_qualification_types(self, p: Mapping) -> dict:
        if not isinstance(p.get("MustBeRequestable"), bool):
            raise self._err("Parameter MustBeRequestable is required.", "AWS.MissingParameters")
        query = (self._str(p, "Query", max_len=1000) or "").lower()
        rows = [q for q in self._qual_types.values()
                if (not p["MustBeRequestable"] or q["IsRequestable"])
                and (not query or any(query in str(q.get(k, "")).lower() for k in ("Name", "Description", "Keywords")))]
        items = [(i, dict(q)) for i, q in enumerate(sorted(rows, key=lambda q: q["CreationTime"]))]
        page, nxt = self._page("qualtypes", items, p)
        out = {"NumResults": len(page), "QualificationTypes": page}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_get_qualification_score(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        rec = self._quals.get((q["QualificationTypeId"], worker))
        if rec is None:
            raise self._err("You requested a Qualification that does not exist.",
                            "AWS.MechanicalTurk.QualificationDoesNotExist")
        return {"Qualification": dict(rec)}

    def _op_get_qualification_type(self, p: Mapping) -> dict:
        return {"QualificationType": dict(self._qual_type(p))}

    def _qual_type(self, p: Mapping) -> dict:
        qid = self._entity(p, "QualificationTypeId")
        q = self._qual_types.get(qid)
        if q is None:
            raise self._err(f"QualificationType {qid} does not exist.",
                            "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
        return q

    def _op_associate_qualification_with_worker(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        value = self._int(p, "IntegerValue", default=1)
        self._quals[(q["QualificationTypeId"], worker)] = {
            "QualificationTypeId": q["QualificationTypeId"], "WorkerId": worker, "GrantTime": self.clock(),
            "IntegerValue": value, "Status": "Granted"}
        return {}

    def _op_disassociate_qualification_from_worker(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        worker = self._worker(p)
        rec = self._quals.get((q["QualificationTypeId"], worker))
        if rec is None or rec["Status"] != "Granted":
            raise self._err(f"Worker {worker} does not have a qualification of type {q['QualificationTypeId']}.",
                            "AWS.MechanicalTurk.QualificationDoesNotExist")
        rec["Status"] = "Revoked"
        return {}

    def _op_list_workers_with_qualification_type(self, p: Mapping) -> dict:
        q = self._qual_type(p)
        status = p.get("Status")
        rows = [r for (qt, _), r in self._quals.items() if qt == q["QualificationTypeId"]
                and (r["Status"] == status if status else r["Status"] == "Granted")]
        page, nxt = self._page("quals", list(enumerate(rows)), p)
        out = {"NumResults": len(page), "Qualifications": [dict(r) for r in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_create_worker_block(self, p: Mapping) -> dict:
        worker = self._worker(p)
        self._blocks[worker] = self._str(p, "Reason", required=True, min_len=1, max_len=1024)
        return {}

    def _op_delete_worker_block(self, p: Mapping) -> dict:
        self._blocks.pop(self._worker(p), None)
        return {}

    def _op_list_worker_blocks(self, p: Mapping) -> dict:
        rows = [{"WorkerId": w, "Reason": r} for w, r in self._blocks.items()]
        page, nxt = self._page("blocks", list(enumerate(rows)), p)
        out = {"NumResults": len(page), "WorkerBlocks": page}
        if nxt:
            out["NextToken"] = nxt
        return out

    # ------------------------------------------------------------------ the worker page
    def hit_page(self, hit_id: str) -> str:
        """The worker page (HTMLContent) of a HIT."""
        with self._lock:
            self._advance()
            hit = self._get_hit(hit_id)
            if hit.html is None:
                raise self._err(f"Hit {hit_id} has no HTMLQuestion page.", "AWS.MechanicalTurk.InvalidHITState")
            return hit.html

    def accept(self, hit_id: str, worker_id: str) -> str:
        """A (browser) worker accepts a HIT; returns the new assignment's (random) id.

        ``worker_id`` must look like an MTurk worker id (``^A[A-Z0-9]{1,63}$``), so
        that the requester can block it. A worker holds at most one assignment of a
        HIT: accepting again is refused (handing back the held id would give it to
        anyone who knows the worker id)."""
        if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
            raise MTurkError("A worker id is an upper-case A followed by 1 to 63 upper-case letters and digits.",
                             "AWS.ParameterOutOfRange")
        with self._lock:
            self._advance()
            hit = self._get_hit(hit_id)
            now = self.clock()
            if self._status(hit, now)[0] != "Assignable":
                raise self._err(f"Hit {hit_id} is not available.", "AWS.MechanicalTurk.InvalidHITState")
            if not self._can_work(worker_id, hit):
                raise self._err(f"Worker {worker_id} may not work on HIT {hit_id} (blocked, not qualified, "
                                "or already holding or done with one of its assignments).",
                                "AWS.MechanicalTurk.PermissionDenied")
            a = _Assignment(self._new_id("assignment"), hit.id, worker_id, "Accepted", "browser",
                            accept_time=now, deadline=now + hit.type.assignment_duration)
            self._assignments[a.id] = a
            self._accepted.add(a.id)
            hit.assignments.append(a.id)
            return a.id

    def _browser_assignment(self, assignment_id: str, worker_id: str | None, hit_id: str | None) -> _Assignment:
        """The browser assignment ``assignment_id`` if ``worker_id`` holds it (on ``hit_id``, when given)."""
        a = self._assignments.get(assignment_id)
        if a is None or a.source != "browser" or (hit_id is not None and a.hit_id != hit_id):
            raise self._err(f"Assignment {assignment_id[:64]} does not exist on this HIT: accept the HIT first.",
                            "AWS.MechanicalTurk.AssignmentDoesNotExist")
        if worker_id is None or worker_id != a.worker_id:
            raise self._err(f"Assignment {assignment_id} is not this worker's (give the workerId that accepted it).",
                            "AWS.MechanicalTurk.PermissionDenied")
        return a

    def check_holder(self, assignment_id: str, worker_id: str | None, hit_id: str) -> None:
        """Raise :class:`MTurkError` unless ``worker_id`` accepted ``assignment_id`` on ``hit_id`` (changes nothing)."""
        with self._lock:
            self._advance()
            self._browser_assignment(assignment_id, worker_id, hit_id)

    def external_submit(self, fields: Iterable[tuple[str, str]], *, worker_id: str | None = None,
                        hit_id: str | None = None) -> str:
        """What MTurk does with a POST to ``/mturk/externalSubmit``.

        Every field except ``assignmentId`` becomes an Answer. The assignment must
        be one :meth:`accept` issued to ``worker_id`` (on ``hit_id``, when given)
        and still open. Returns the assignment id.
        """
        fields = list(fields)
        aids = [v for k, v in fields if k == "assignmentId"]
        answers = [(k, v) for k, v in fields if k != "assignmentId"]
        if not aids or not aids[0]:
            raise MTurkError("The form has no assignmentId field.", "AWS.MissingParameters")
        aid = aids[0]
        if aid == ASSIGNMENT_ID_NOT_AVAILABLE:
            raise MTurkError("This is a preview: accept the HIT before submitting.",
                             "AWS.MechanicalTurk.InvalidAssignmentState")
        with self._lock:
            self._advance()
            now = self.clock()
            a = self._browser_assignment(aid, worker_id, hit_id)
            if a.state != "Accepted":
                raise self._err(f"Assignment {aid} has already been submitted or is no longer available.",
                                "AWS.MechanicalTurk.InvalidAssignmentState")
            self._submit(a, self._hits[a.hit_id], answers_xml(answers), accept_time=a.accept_time, submit_time=now)
            return a.id

    # ------------------------------------------------------------------ qualification tests in a browser
    def tests(self) -> list[dict]:
        """The active qualification types with a Test a person can take (``QualificationTypeId``, ``Name``)."""
        with self._lock:
            return [{"QualificationTypeId": qt, "Name": self._qual_types[qt]["Name"]} for qt in self._tests
                    if self._qual_types[qt]["QualificationTypeStatus"] == "Active"]

    def test_page(self, qt_id: str):
        """``(name, title, overview, items)`` of a qualification type's Test (:func:`.qualification.test_page`)."""
        from .qualification import test_page

        with self._lock:
            q = self._qual_types.get(qt_id)
            if q is None or qt_id not in self._tests:
                raise self._err(f"QualificationType {qt_id} has no test.",
                                "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
            return (q["Name"], *test_page(q["Test"]))

    def take_test(self, qt_id: str, worker_id: str, answers: Mapping[str, str]) -> int | None:
        """A (browser) worker takes a qualification test, once, as MTurk grades it: the selections are
        scored with the AnswerKey and the qualification granted with the resulting IntegerValue
        (returned). A test without an AnswerKey waits for the requester (None: nothing granted)."""
        if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
            raise MTurkError("A worker id is an upper-case A followed by 1 to 63 upper-case letters and digits.",
                             "AWS.ParameterOutOfRange")
        with self._lock:
            self._advance()
            self.test_page(qt_id)
            if (qt_id, worker_id) in self._test_takers or (qt_id, worker_id) in self._quals:
                raise self._err(f"Worker {worker_id} has taken this test already (one try).",
                                "AWS.MechanicalTurk.PermissionDenied")
            questions, key = self._tests[qt_id]
            now = self.clock()
            self._test_takers[(qt_id, worker_id)] = now
            if key is None:
                return None
            offered = {q.identifier: set(q.selections) for q in questions}
            selected = {k: frozenset([v]) for k, v in answers.items() if v in offered.get(k, ())}
            value = key.value(key.score(selected))
            self._quals[(qt_id, worker_id)] = {"QualificationTypeId": qt_id, "WorkerId": worker_id, "GrantTime": now,
                                               "IntegerValue": value, "Status": "Granted"}
            return value

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
                "initial_balance_usd": _usd(self._initial_cents),
                "balance_usd": _usd(self._balance_cents),
                "spent_usd": _usd(self._initial_cents - self._balance_cents),
                "rewards_usd": _usd(sums.get("reward", 0)),
                "bonuses_usd": _usd(sums.get("bonus", 0)),
                "fees_usd": _usd(sums.get("fee", 0) + sums.get("bonus_fee", 0)),
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
