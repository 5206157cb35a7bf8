"""The local endpoint's records, limits and money text: what :mod:`.service`'s operations keep and check.

:class:`HitType`, :class:`Hit` and :class:`Assignment` are the endpoint's records (never
shown as such: :mod:`.core` turns them into MTurk's response structures); the limits are
MTurk's (API reference, 2017-01-17); amounts are integer cents, written as MTurk writes
them (``"0.20"``).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ..errors import MTurkError
from .pages import PageQuestion

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

ENTITY_ID = re.compile(r"^[A-Z0-9]+$")
WORKER_ID = re.compile(r"^A[A-Z0-9]{1,63}$")
"""MTurk's WorkerId (``^A[A-Z0-9]+$``, at most 64 characters): what a browser worker may call themself."""
ID_ALPHABET = string.ascii_uppercase + string.digits
_CURRENCY = re.compile(r"^[0-9]+(\.)?[0-9]{0,2}$")
PUBLIC_STATES = ("Submitted", "Approved", "Rejected")


class ManualClock:
    """A clock that only moves when told to (epoch seconds)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += float(seconds)
        return self.now


def cents_of(text: str | None, field: str) -> int:
    """Integer cents of an amount MTurk accepts (``"0.20"``), else MTurk's ParameterOutOfRange error."""
    if not isinstance(text, str) or not _CURRENCY.match(text):
        raise MTurkError(f"Value '{text}' for {field} is invalid: expected an amount like 0.20",
                         "AWS.ParameterOutOfRange")
    try:
        return int((Decimal(text) * 100).to_integral_value())
    except InvalidOperation:  # pragma: no cover - the pattern already excludes these
        raise MTurkError(f"Value '{text}' for {field} is invalid", "AWS.ParameterOutOfRange") from None


def usd_text(cents: int) -> str:
    """Cents written as MTurk writes amounts (``"0.20"``, ``"-1.05"``)."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


@dataclass
class HitType:
    """A HIT type: what CreateHITType (or CreateHIT) declares, keyed by a hash of its values."""

    id: str
    title: str
    description: str
    keywords: str | None
    reward_cents: int
    assignment_duration: int
    auto_approval_delay: int
    requirements: list[dict]


@dataclass
class Hit:
    """A HIT, its page and questions, and the ids of its assignments (every worker who previewed it)."""

    id: str
    seq: int
    type: HitType
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
class Assignment:
    """One worker's slot of a HIT, from preview (simulated) or accept (browser) to approval or rejection."""

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

    def overdue(self, now: float) -> bool:
        """Whether the assignment's deadline has passed (an accepted one always has a deadline)."""
        return self.deadline is not None and now >= self.deadline


def manual_annotation(annotation: str | None) -> bool:
    """Whether a HIT's RequesterAnnotation leaves it for a browser: it contains "manual",
    and it is not crowdprop's own ``crowdprop:<campaign name>:r<round>:<token>``, whose
    campaign name is free text (a campaign named "manual-vs-auto" would otherwise wait for
    nobody a whole round timeout per round; a campaign's HITs are left for a browser with
    ``crowdprop mturk-local --no-simulate``)."""
    text = (annotation or "").lower()
    return "manual" in text and not text.startswith("crowdprop:")
