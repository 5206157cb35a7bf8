"""The Amazon Mechanical Turk backend (boto3), for the sandbox, production and
the local MTurk-compatible endpoint alike.

Only the endpoint differs between the three targets:

========== ===================================================== ==================
target     endpoint                                              credentials
========== ===================================================== ==================
sandbox    https://mturk-requester-sandbox.us-east-1.amazonaws.com AWS chain
production https://mturk-requester.us-east-1.amazonaws.com        AWS chain
None       ``endpoint_url`` (the local endpoint)                 AWS chain or none
========== ===================================================== ==================

Credentials come only from the standard AWS chain (environment, shared
``~/.aws`` files, ``profile``); this module never reads, logs or stores them.

Guarantees
----------
- ``publish`` is idempotent on :attr:`HitRequest.token` (MTurk's
  ``UniqueRequestToken``); a repeat returns the existing HIT's id.
- The HTMLQuestion is refused before CreateHIT when it passes 64 KB, and so is
  a HIT whose maximum cost would pass the budget cap (:class:`BudgetGuard`).
- ``poll`` lists assignments through boto3 paginators and checks every answer
  against the questions of the HIT; anything unexpected flags the assignment.
- Throttling, ``ServiceFault`` and HTTP 5xx are retried with jittered
  exponential backoff (a bounded number of times); nothing else is.

Campaign qualifications
-----------------------
Given a ``campaign_id``, every HIT type of the campaign carries two more
QualificationRequirements, on qualification types created once per campaign
and found again by name in a later process (ListQualificationTypes):

``crowdprop <campaign_id> blocked``
    ``DoesNotExist``: a soft block is ``AssociateQualificationWithWorker`` of
    this type (no notification); the worker no longer sees the campaign's HITs,
    and their MTurk record is untouched. Associating again is harmless.
``crowdprop <campaign_id> qualification test`` (with a :class:`QualificationTest`)
    ``GreaterThanOrEqualTo`` :attr:`QualificationTest.passing_percentage`: a
    QuestionForm test of yes/no questions on gold masks (their overlay pictures
    by URL), graded by MTurk with an AnswerKey (one point per right answer,
    ``PercentageMapping``), one try, never auto-granted.

A hard block stays ``CreateWorkerBlock``.

Beside this module
------------------
The XML it writes and reads (QuestionForm, AnswerKey, QuestionFormAnswers, the
question ids of an HTMLQuestion) is :mod:`.mturk_xml`'s; the spend guard
(:class:`~.spend.BudgetGuard`) is :mod:`.spend`'s. Both are imported here and
stay reachable as ``crowdprop.crowd.mturk.<name>``.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import pandas as pd
import tenacity

from .. import config as _config
from ..config import MIN_AUTO_APPROVAL_S, MTurkSection  # noqa: F401  (MIN_AUTO_APPROVAL_S: part of this API)
from ..errors import MTurkError
from ..money import cap_cents, cents, fmt
from .base import Assignment, BlockKind, HitRequest, HitState
from .mturk_xml import (MAX_TEST_BYTES, answer_key_xml, parse_answers, qualification_question_id, question_form_xml,
                        question_ids_in)
from .spend import BudgetGuard

log = logging.getLogger(__name__)

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"

QUAL_PERCENT_APPROVED = "000000000000000000L0"
QUAL_HITS_APPROVED = "00000000000000000040"
QUAL_LOCALE = "00000000000000000071"


# ------------------------------------------------------------ qualification test
BLOCK_REASON = "Answers to known items were wrong too often."


def qualification_answer_key(question_id: str) -> str:
    """The :meth:`~crowdprop.replay.workers.WorkerPool.answer` key of a simulated worker's
    answer to a test question (the in-process replay and the local endpoint use the same)."""
    return f"qualification:{question_id}"


def passing_percentage(n_questions: int, pass_share: float) -> int:
    """The least test value (a percentage) that passes: ``n_correct >= pass_share * n_questions``.

    The value MTurk grants is ``floor(100 * n_correct / n_questions)``
    (``PercentageMapping`` with one point per question). Returned is that value
    for the smallest passing ``n_correct``, so ``value >= passing_percentage``
    holds exactly when :func:`crowdprop.quality.passes_qualification` does (for
    ``n_questions <= 100``, where consecutive counts give distinct percentages).
    It equals ``round(100 * pass_share)`` whenever ``pass_share * n_questions``
    is a whole number (10 questions, 0.9: 90).
    """
    if n_questions <= 0:
        return 0
    k = max(0, math.ceil(pass_share * n_questions - 1e-9))
    return (100 * min(k, n_questions)) // n_questions


def checked_test(form: str, key: str, n_questions: int) -> tuple[str, str]:
    """``(form, key)`` of a qualification test, or :class:`MTurkError` when either passes MTurk's 64 KB."""
    for what, text in (("Test", form), ("AnswerKey", key)):
        size = len(text.encode("utf-8"))
        if size > MAX_TEST_BYTES:
            raise MTurkError(f"the qualification test's {what} is {size} bytes and MTurk accepts at most "
                             f"{MAX_TEST_BYTES}; lower [quality] qualification_size ({n_questions}) or use "
                             "shorter image URLs ([mturk] image_base_url instead of presigned S3 URLs)")
    return form, key


@dataclass(frozen=True)
class QualificationTest:
    """The campaign's qualification test: gold masks asked as yes/no questions.

    Attributes
    ----------
    mask_rows : tuple of int, (n,)
        Rows of masks.parquet shown, in test order.
    labels : tuple of bool, (n,)
        The known answer of each ("yes, the mask is correct" is True).
    pass_share : float
        ``[quality] qualification_pass``.
    duration_s : int
        TestDurationInSeconds.
    """

    mask_rows: tuple
    labels: tuple
    pass_share: float
    duration_s: int = 1800

    def __len__(self) -> int:
        return len(self.mask_rows)

    @property
    def passing_percentage(self) -> int:
        return passing_percentage(len(self), self.pass_share)


def qualification_requirements(section: MTurkSection, target: str | None) -> list[dict]:
    """MTurk ``QualificationRequirements`` for ``target`` (see :attr:`MTurkSection.qualifications`)."""
    if section.qualifications == "none" or (section.qualifications == "auto" and target != "production"):
        return []
    reqs = [
        {"QualificationTypeId": QUAL_PERCENT_APPROVED, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [section.min_percent_approved], "ActionsGuarded": "Accept"},
        {"QualificationTypeId": QUAL_HITS_APPROVED, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [section.min_hits_approved], "ActionsGuarded": "Accept"},
    ]
    if section.locale:
        reqs.append({"QualificationTypeId": QUAL_LOCALE, "Comparator": "In",
                     "LocaleValues": [{"Country": c} for c in section.locale], "ActionsGuarded": "Accept"})
    return reqs


# --------------------------------------------------------------------- client
def connect(target: str | None, *, endpoint_url: str | None = None, profile: str | None = None,
            region: str = "us-east-1"):
    """A boto3 MTurk client for ``target`` ("sandbox", "production") or ``endpoint_url``.

    Credentials come from the standard AWS chain only. With no target and no
    credentials anywhere (a local endpoint on a fresh machine), requests go
    unsigned. botocore itself does not retry: :class:`MTurkBackend` does.
    """
    import boto3
    import botocore
    from botocore.config import Config as BotoConfig

    if target not in ("sandbox", "production", None):
        raise ValueError(f"target must be 'sandbox', 'production' or None, not {target!r}")
    if endpoint_url is None:
        if target is None:
            raise ValueError("a local target needs endpoint_url")
        endpoint_url = SANDBOX_ENDPOINT if target == "sandbox" else PRODUCTION_ENDPOINT
    session = boto3.Session(profile_name=profile, region_name=region)
    options: dict[str, Any] = {"retries": {"total_max_attempts": 1, "mode": "standard"},  # no botocore retries
                               "connect_timeout": 10, "read_timeout": 60, "user_agent_extra": "crowdprop"}
    if target is None and session.get_credentials() is None:
        options["signature_version"] = botocore.UNSIGNED
    elif target is not None and session.get_credentials() is None:
        raise MTurkError(
            f"no AWS credentials found for the MTurk {target}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "or a profile in ~/.aws/credentials (aws configure), then try again")
    return session.client("mturk", endpoint_url=endpoint_url, config=BotoConfig(**options))


def error_code(exc: BaseException) -> tuple[str, str, int, str]:
    """``(Code, TurkErrorCode, HTTP status, Message)`` of a botocore ClientError (blanks otherwise)."""
    resp = getattr(exc, "response", None) or {}
    err = resp.get("Error", {}) or {}
    status = int((resp.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
    turk = resp.get("TurkErrorCode") or err.get("TurkErrorCode") or ""
    return str(err.get("Code", "")), str(turk), status, str(err.get("Message", ""))


def is_retryable(exc: BaseException) -> bool:
    """Throttling, MTurk ServiceFault and HTTP 5xx are worth retrying; nothing else."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code, _, status, _ = error_code(exc)
    return code in ("ThrottlingException", "Throttling", "ServiceFault") or status >= 500


# ----------------------------------------------------------------- HIT ids
_HIT_ID_RE = re.compile(r"\b[A-Z0-9]{30}\b")


def annotation(hit: HitRequest) -> str:
    """RequesterAnnotation tagging a HIT with its campaign, round and token."""
    return f"crowdprop:{hit.campaign}:r{hit.round}:{hit.token}"[:255]


def _hit_missing(exc: BaseException) -> bool:
    """Whether a botocore error says the HIT does not exist (any more)."""
    _, turk, _, message = error_code(exc)
    return "HITDoesNotExist" in turk or "does not exist" in message.lower() and "hit" in message.lower()


def _seconds(t: Any) -> float:
    if isinstance(t, datetime):
        return t.timestamp()
    return float(t or 0.0)


def _log_retry(state: tenacity.RetryCallState) -> None:
    """tenacity's ``before_sleep``: a retryable MTurk error, and which retry comes next."""
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("MTurk %s: %s; retry %d", getattr(state.fn, "__name__", "call"),
                error_code(exc)[0] if exc is not None else "?", state.attempt_number)


# -------------------------------------------------------------------- backend
class MTurkBackend:
    """:class:`~crowdprop.crowd.base.CrowdBackend` on MTurk (or a compatible endpoint).

    Parameters
    ----------
    client
        A boto3 ``mturk`` client (:func:`connect`).
    config, mturk
        The campaign configuration and its ``[mturk]`` section.
    page
        A :class:`crowdprop.hits.render.PageRenderer`.
    target
        ``"sandbox"``, ``"production"`` or ``"local"`` (decides the default qualifications).
    masks
        masks.parquet as a DataFrame; questions refer to its rows.
    guard
        Budget guard (default: the ``[campaign] budget_usd`` cap, nothing spent).
    retry_attempts, retry_wait_s, retry_max_wait_s, sleep
        Bounded jittered exponential backoff for retryable errors.
    page_size
        Results per ListHITs / ListAssignmentsForHIT page (MTurk allows 100).
    campaign_id
        Turns on the campaign qualifications (module docstring): the soft-block
        type and, with ``test``, the qualification test. None: neither.
    test
        The campaign's :class:`QualificationTest` (None or empty: no test).
    """

    name = "mturk"

    def __init__(self, client, *, config: _config.Config, mturk: MTurkSection, page, target: str,
                 masks: pd.DataFrame | None = None, guard: BudgetGuard | None = None,
                 retry_attempts: int = 6, retry_wait_s: float = 1.0, retry_max_wait_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, page_size: int = 100,
                 campaign_id: str | None = None, test: QualificationTest | None = None):
        self.client = client
        self.campaign_id = campaign_id
        self.test = test if test is not None and len(test) > 0 and campaign_id else None
        self._qual_ids: dict[str, str] = {}
        self.config = config
        self.mturk = mturk
        self.page = page
        self.target = target
        self.masks = masks
        self.page_size = page_size
        self._sleep = sleep
        self.guard = guard or BudgetGuard(cap_cents(config.campaign.budget_usd))
        self._hit_types: dict[str, str] = {}
        self._asked: dict[str, tuple[str, ...]] = {}
        self._reward: dict[str, int] = {}
        """HIT id -> its reward in cents as MTurk reported it (CreateHIT / GetHIT)."""
        self._parsed: dict[str, Assignment] = {}
        """Assignment id -> the assignment as first parsed (answers never change once submitted)."""
        self.gone: set[str] = set()
        """HITs MTurk no longer knows (disposed, or on an endpoint that was restarted)."""
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=tenacity.wait_random_exponential(multiplier=retry_wait_s, max=retry_max_wait_s),
            stop=tenacity.stop_after_attempt(retry_attempts),
            sleep=sleep, reraise=True,
            before_sleep=_log_retry,
        )

    # -- plumbing
    def _call(self, op: str, **kwargs):
        fn = getattr(self.client, op)
        return self._retrying(fn, **kwargs)

    def call(self, op: str, **kwargs):
        """One MTurk API call (boto3's snake_case name) with this backend's bounded retries."""
        return self._call(op, **kwargs)

    def assignments_of(self, hit_id: str, statuses: list[str]) -> list[dict]:
        """Every assignment of ``hit_id`` in ``statuses`` as MTurk lists it (all pages)."""
        return self._listed(hit_id, statuses)

    def remember(self, hit_id: str, hit: HitRequest) -> None:
        """Record the questions of a HIT published earlier (e.g. by a previous process)."""
        self._asked[hit_id] = tuple(q.question_id for q in hit.questions)

    def hit_type_id(self, reward_usd: float) -> str:
        """The campaign's HIT type for this reward (created once, then cached)."""
        key = fmt(cents(reward_usd))[1:]
        if key not in self._hit_types:
            reqs = qualification_requirements(self.mturk, self.target) + self.campaign_requirements()
            resp = self._call(
                "create_hit_type", AutoApprovalDelayInSeconds=self.mturk.auto_approval_delay_s,
                AssignmentDurationInSeconds=self.mturk.assignment_duration_s, Reward=key,
                Title=self.mturk.title, Keywords=self.mturk.keywords, Description=self.mturk.description,
                QualificationRequirements=reqs)
            self._hit_types[key] = resp["HITTypeId"]
        return self._hit_types[key]

    # -- campaign qualifications
    @property
    def blocked_type_name(self) -> str:
        return f"crowdprop {self.campaign_id} blocked"

    @property
    def test_type_name(self) -> str:
        return f"crowdprop {self.campaign_id} qualification test"

    def find_qualification_type(self, name: str) -> dict | None:
        """This requester's qualification type called exactly ``name`` (not being disposed), or None."""
        def listing() -> dict | None:
            pages = self.client.get_paginator("list_qualification_types").paginate(
                Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True,
                PaginationConfig={"PageSize": self.page_size})
            for page in pages:
                for q in page.get("QualificationTypes", []):
                    if q.get("Name") == name and q.get("QualificationTypeStatus") != "Disposing":
                        return q
            return None

        return self._retrying(listing)

    def _qualification_type(self, role: str, name: str, **create) -> str:
        """The id of the campaign's ``role`` type: cached, else found by name, else created.

        Created before, its name is taken: MTurk answers QualificationTypeAlreadyExists
        (a previous process created it, and the search index may lag), and it is
        looked up again a few times."""
        from botocore.exceptions import ClientError

        if role in self._qual_ids:
            return self._qual_ids[role]
        found = self.find_qualification_type(name)
        if found is None:
            try:
                found = self._call("create_qualification_type", Name=name, QualificationTypeStatus="Active",
                                   **create)["QualificationType"]
                log.info("qualification type %r created: %s", name, found["QualificationTypeId"])
            except ClientError as e:
                _, turk, _, message = error_code(e)
                if "AlreadyExists" not in turk and "already created" not in message:
                    raise
                for attempt in range(5):
                    found = self.find_qualification_type(name)
                    if found is not None:
                        break
                    self._sleep(min(30.0, 2.0 ** attempt))
                if found is None:
                    raise MTurkError(f"qualification type {name!r} exists on MTurk but ListQualificationTypes "
                                     "does not find it; try again in a minute") from None
        else:
            log.info("qualification type %r found: %s", name, found["QualificationTypeId"])
            if found.get("QualificationTypeStatus") == "Inactive":
                log.warning("qualification type %r is Inactive: workers cannot take its test", name)
        self._qual_ids[role] = found["QualificationTypeId"]
        return self._qual_ids[role]

    def blocked_qualification_id(self) -> str:
        """The campaign's soft-block qualification type (created on first use)."""
        if not self.campaign_id:
            raise MTurkError("soft blocks need the backend's campaign_id")
        return self._qualification_type(
            "blocked", self.blocked_type_name,
            Description=f"Workers of crowdprop campaign {self.campaign_id} whose answers to known items were "
                        "wrong too often; they no longer see its HITs.",
            Keywords="crowdprop, block")

    def test_xml(self) -> tuple[str, str]:
        """``(Test, AnswerKey)`` XML of the campaign's qualification test.

        Raises :class:`MTurkError` when either passes MTurk's 64 KB."""
        t = self.test
        if t is None:
            raise MTurkError("this campaign has no qualification test")
        if self.masks is None:
            raise MTurkError("the qualification test needs the masks table")
        items, answers = [], []
        for row, label in zip(t.mask_rows, t.labels):
            m = self.masks.iloc[int(row)]
            qid = qualification_question_id(int(m["mask_id"]))
            items.append((qid, self.page.class_name(int(m["category_id"])), self.page.image_url(m)))
            answers.append((qid, bool(label)))
        form = question_form_xml(items, title="Qualification test: correct outlines",
                                 instructions=(f"Answer {len(items)} yes/no questions like those of the HITs: is the "
                                               "colored region a correct outline of the named object? "
                                               f"Get at least {t.passing_percentage} % right to work on the HITs."))
        return checked_test(form, answer_key_xml(answers), len(items))

    def test_qualification_id(self) -> str:
        """The campaign's qualification-test type (created on first use)."""
        if self.test is None:
            raise MTurkError("this campaign has no qualification test")
        if "test" not in self._qual_ids:
            form, key = self.test_xml()
            description, keywords = self.test_type_text()
            self._qualification_type(
                "test", self.test_type_name, Test=form, AnswerKey=key,
                TestDurationInSeconds=self.test.duration_s, AutoGranted=False,
                Description=description, Keywords=keywords)
        return self._qual_ids["test"]

    def test_type_text(self) -> tuple[str, str]:
        """Description and keywords of the qualification-test type."""
        n = len(self.test) if self.test is not None else 0
        return (f"A short test of {n} yes/no questions on object outlines, for the HITs of crowdprop campaign "
                f"{self.campaign_id}.", "crowdprop, qualification, segmentation, outline")

    def campaign_requirements(self) -> list[dict]:
        """QualificationRequirements of the campaign qualifications (empty without ``campaign_id``)."""
        if not self.campaign_id:
            return []
        reqs: list[dict[str, Any]] = [{"QualificationTypeId": self.blocked_qualification_id(),
                                       "Comparator": "DoesNotExist", "ActionsGuarded": "DiscoverPreviewAndAccept"}]
        if self.test is not None:
            reqs.append({"QualificationTypeId": self.test_qualification_id(), "Comparator": "GreaterThanOrEqualTo",
                         "IntegerValues": [self.test.passing_percentage], "ActionsGuarded": "Accept"})
        return reqs

    def block(self, worker_id: str, kind: BlockKind | str) -> None:
        """Keep a worker out of the campaign.

        ``soft``: AssociateQualificationWithWorker of the campaign's blocked type
        (no notification; again is harmless). ``hard``: CreateWorkerBlock.
        ``qualification`` (failed the test): nothing, MTurk keeps them out itself.
        """
        if kind == BlockKind.HARD:
            self._call("create_worker_block", WorkerId=worker_id, Reason=BLOCK_REASON)
        elif kind == BlockKind.SOFT:
            if not self.campaign_id:
                log.info("worker %s: soft block kept in the run directory only (no campaign id)", worker_id)
                return
            self._call("associate_qualification_with_worker", QualificationTypeId=self.blocked_qualification_id(),
                       WorkerId=worker_id, IntegerValue=1, SendNotification=False)
        elif kind != BlockKind.QUALIFICATION:
            raise ValueError(f"block kind must be 'soft', 'hard' or 'qualification', not {kind!r}")

    def test_scores(self) -> dict[str, int]:
        """``{worker_id: value}`` of every worker graded on the campaign's test (empty without one)."""
        if self.test is None:
            return {}
        qt = self.test_qualification_id()

        def listing() -> dict[str, int]:
            pages = self.client.get_paginator("list_workers_with_qualification_type").paginate(
                QualificationTypeId=qt, Status="Granted", PaginationConfig={"PageSize": self.page_size})
            return {q["WorkerId"]: int(q.get("IntegerValue", 0)) for page in pages
                    for q in page.get("Qualifications", [])}

        return self._retrying(listing)

    @property
    def failed_qualification(self) -> set[str]:
        """Workers graded below the test's passing percentage (MTurk keeps them out)."""
        if self.test is None:
            return set()
        bar = self.test.passing_percentage
        return {w for w, v in self.test_scores().items() if v < bar}

    # -- the seam
    def publish(self, hit: HitRequest, *, admitted: bool = False) -> str:
        """Publish ``hit`` (idempotent on ``hit.token``) and return its HIT id. ``admitted``: the
        budget was checked when its token was journaled (CreateHIT may have happened then), so
        the guard does not refuse it now."""
        from botocore.exceptions import ClientError

        if not 1 <= hit.assignments <= 9:
            raise MTurkError(f"HIT {hit.token}: {hit.assignments} assignments; MTurk fees double at 10, use 1 to 9")
        if not 0 < len(hit.token) <= 64:
            raise MTurkError(f"HIT token {hit.token!r} must be 1 to 64 characters")
        html = self.page.render(hit, self.masks)
        question = self.page.question_xml(html, token=hit.token)  # raises before CreateHIT when > 64 KB
        cost = 0 if admitted else self.guard.admit_hit(hit)
        try:
            type_id = self.hit_type_id(hit.reward_usd)
            resp = self._call("create_hit_with_hit_type", HITTypeId=type_id, MaxAssignments=hit.assignments,
                              LifetimeInSeconds=self.mturk.lifetime_s, Question=question,
                              RequesterAnnotation=annotation(hit), UniqueRequestToken=hit.token)
            hit_id = resp["HIT"]["HITId"]
            if resp["HIT"].get("Reward") is not None:
                self._reward[hit_id] = cents(resp["HIT"]["Reward"])
        except ClientError as e:
            code, turk, _, message = error_code(e)
            if turk != "AWS.MechanicalTurk.HitAlreadyExists" and "HitAlreadyExists" not in message:
                self.guard.refund(cost)
                raise
            hit_id = self._existing_hit_id(hit, message)
            self.verify(hit_id, hit)
            log.info("HIT %s already exists as %s (token reused)", hit.token, hit_id)
        self._asked[hit_id] = tuple(q.question_id for q in hit.questions)
        return hit_id

    def verify(self, hit_id: str, hit: HitRequest) -> None:
        """Adopt HIT ``hit_id`` for ``hit`` only if it holds what ``hit`` asks: the same question ids
        in the same order, the same reward and number of assignments (GetHIT). Raises
        :class:`MTurkError` otherwise: such a HIT's answers would be read against other questions."""
        resp = self._call("get_hit", HITId=hit_id)["HIT"]
        ids = tuple(question_ids_in(resp.get("Question", "")))
        want = tuple(q.question_id for q in hit.questions)
        reward = cents(resp["Reward"]) if resp.get("Reward") is not None else None
        problems = []
        if ids != want:
            problems.append(f"its {len(ids)} question(s) are not the {len(want)} planned")
        if reward is not None and reward != hit.reward_cents:
            problems.append(f"its reward is {fmt(reward)}, not {fmt(hit.reward_cents)}")
        if resp.get("MaxAssignments") is not None and int(resp["MaxAssignments"]) != hit.assignments:
            problems.append(f"it has {resp['MaxAssignments']} assignments, not {hit.assignments}")
        if problems:
            raise MTurkError(f"HIT {hit_id} found under token {hit.token} does not hold what the run directory "
                             f"planned ({'; '.join(problems)}); not adopted")
        if reward is not None:
            self._reward[hit_id] = reward

    def _existing_hit_id(self, hit: HitRequest, message: str) -> str:
        m = _HIT_ID_RE.search(message)
        if m:
            return m.group(0)
        found = self.find_hits(hit.campaign).get(hit.token)
        if found is None:
            raise MTurkError(f"HIT {hit.token}: MTurk says it exists but neither its message nor ListHITs "
                             f"names it: {message[:200]}")
        return found

    def find_hits(self, campaign: str) -> dict[str, str]:
        """``{token: hit_id}`` of this campaign's HITs still on MTurk (by RequesterAnnotation)."""
        prefix = f"crowdprop:{campaign}:"

        def listing() -> dict[str, str]:
            out: dict[str, str] = {}
            for page in self.client.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": self.page_size}):
                for h in page.get("HITs", []):
                    note = h.get("RequesterAnnotation") or ""
                    if note.startswith(prefix):  # crowdprop:<campaign>:r<round>:<token>
                        rest = note[len(prefix):]
                        out[rest.split(":", 1)[1] if ":" in rest else note] = h["HITId"]
            return out

        return self._retrying(listing)

    def _questions_of(self, hit_id: str) -> tuple[str, ...] | None:
        if hit_id not in self._asked:
            resp = self._call("get_hit", HITId=hit_id)
            if resp["HIT"].get("Reward") is not None:
                self._reward[hit_id] = cents(resp["HIT"]["Reward"])
            ids = question_ids_in(resp["HIT"].get("Question", ""))
            if not ids:
                log.warning("HIT %s: no question ids in its Question; answers checked for format only", hit_id)
                return None
            self._asked[hit_id] = tuple(ids)
        return self._asked[hit_id]

    def _listed(self, hit_id: str, statuses: list[str]) -> list[dict]:
        def listing() -> list[dict]:
            pages = self.client.get_paginator("list_assignments_for_hit").paginate(
                HITId=hit_id, AssignmentStatuses=statuses, PaginationConfig={"PageSize": self.page_size})
            return [a for page in pages for a in page.get("Assignments", [])]

        return self._retrying(listing)

    def poll(self, hit_ids: Sequence[str], *, settled: bool = False) -> list[Assignment]:
        """Every submitted, unsettled assignment of ``hit_ids``, answers checked; with
        ``settled=True`` also those MTurk lists as Approved or Rejected (each with its
        ``status``). A HIT MTurk no longer knows is skipped and added to :attr:`gone`."""
        out = []
        statuses = ["Submitted", "Approved", "Rejected"] if settled else ["Submitted"]
        for hit_id in hit_ids:
            if hit_id in self.gone:
                continue
            try:
                asked = self._questions_of(hit_id)
                listed = self._listed(hit_id, statuses)
            except Exception as e:  # noqa: BLE001 - only "HIT does not exist" is handled
                if not _hit_missing(e):
                    raise
                log.warning("HIT %s no longer exists on MTurk; nothing more can arrive for it", hit_id)
                self.gone.add(hit_id)
                continue
            for a in listed:
                out.append(self._assignment(hit_id, a, asked))
        return out

    def _assignment(self, hit_id: str, a: dict, asked: Sequence[str] | None) -> Assignment:
        import dataclasses

        status = a.get("AssignmentStatus", "Submitted")
        known = self._parsed.get(a["AssignmentId"])
        if known is not None:
            return dataclasses.replace(known, status=status, reward_cents=self._reward.get(hit_id))
        answers, flag = parse_answers(a.get("Answer") or "", asked)
        accept, submit = _seconds(a.get("AcceptTime")), _seconds(a.get("SubmitTime"))
        if flag:
            log.warning("assignment %s of HIT %s flagged: %s", a.get("AssignmentId"), hit_id, flag)
        out = Assignment(assignment_id=a["AssignmentId"], hit_id=hit_id, worker_id=a.get("WorkerId", ""),
                         answers=answers, work_seconds=max(0.0, submit - accept), accept_time=accept,
                         submit_time=submit, flag=flag, status=status, reward_cents=self._reward.get(hit_id))
        self._parsed[out.assignment_id] = out
        return out

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> str:
        """Approve or reject; return the state MTurk holds afterwards (``Approved`` / ``Rejected``).

        An assignment MTurk settled already keeps that state (it approves submitted work on its
        own after the auto-approval delay, and an approval cannot be undone): the call is then
        refused, and MTurk's state is returned for the caller to record."""
        from botocore.exceptions import ClientError

        try:
            if approve:
                kw = {"RequesterFeedback": feedback[:1024]} if feedback else {}
                self._call("approve_assignment", AssignmentId=assignment_id, **kw)
            else:
                self._call("reject_assignment", AssignmentId=assignment_id,
                           RequesterFeedback=(feedback or "Answers did not match known items.")[:1024])
            return "Approved" if approve else "Rejected"
        except ClientError as e:
            if error_code(e)[0] != "RequestError":
                raise
            status = self._call("get_assignment", AssignmentId=assignment_id)["Assignment"].get("AssignmentStatus")
            if status not in ("Approved", "Rejected"):
                raise
            return status

    def hit_state(self, hit_id: str) -> HitState:
        """``{"pending", "available", "gone"}`` of a HIT (GetHIT): work accepted and not yet
        submitted, slots open to workers, and whether MTurk no longer knows the HIT."""
        if hit_id in self.gone:
            return {"pending": 0, "available": 0, "gone": True}
        try:
            h = self._call("get_hit", HITId=hit_id)["HIT"]
        except Exception as e:  # noqa: BLE001
            if not _hit_missing(e):
                raise
            self.gone.add(hit_id)
            return {"pending": 0, "available": 0, "gone": True}
        if h.get("Reward") is not None:
            self._reward[hit_id] = cents(h["Reward"])
        return {"pending": int(h.get("NumberOfAssignmentsPending", 0) or 0),
                "available": int(h.get("NumberOfAssignmentsAvailable", 0) or 0), "gone": False}

    def expire(self, hit_id: str) -> None:
        """Take the HIT off the market now (work already accepted can still be submitted)."""
        self._call("update_expiration_for_hit", HITId=hit_id, ExpireAt=datetime(1970, 1, 1, tzinfo=timezone.utc))

    def extend(self, hit_id: str, assignments: int, token: str) -> str:
        """CreateAdditionalAssignmentsForHIT once per ``token``: ``sent``, or ``already`` when MTurk
        had processed the token (a retried call)."""
        from botocore.exceptions import ClientError

        try:
            self._call("create_additional_assignments_for_hit", HITId=hit_id,
                       NumberOfAdditionalAssignments=int(assignments), UniqueRequestToken=token)
        except ClientError as e:
            _, turk, _, message = error_code(e)
            if turk == "AWS.MechanicalTurk.DuplicateRequest" or "already been processed" in message:
                return "already"
            raise
        return "sent"

    def balance(self) -> float:
        """Available balance in dollars (the sandbox always says 10000.00)."""
        return float(self._call("get_account_balance")["AvailableBalance"])

    def send_bonus(self, *, worker_id: str, assignment_id: str, reason: str, token: str,
                   amount_usd: float | None = None, amount_cents: int | None = None, admitted: bool = False) -> str:
        """Pay a bonus once per ``token`` (<= 64 characters, remembered by MTurk for 24 h); the amount
        in ``amount_cents`` (or ``amount_usd``). ``admitted``: the caller's ledger counted it already,
        so the guard does not. Returns ``sent``, or ``already`` when MTurk had processed the token.

        A retried call (a lost response) is answered DuplicateRequest within MTurk's 24 hours; a
        bonus sent again later is found in ListBonusPayments of the assignment (same amount and
        reason) and not sent twice."""
        from botocore.exceptions import ClientError

        if amount_cents is not None:
            amount = int(amount_cents)
        elif amount_usd is not None:
            amount = cents(amount_usd)
        else:
            raise ValueError("send_bonus needs amount_cents or amount_usd")
        if self.bonus_listed(assignment_id, amount, reason):
            log.info("bonus %s is already listed for assignment %s", token, assignment_id)
            return "already"
        cost = 0 if admitted else self.guard.admit_bonus(amount)
        try:
            self._call("send_bonus", WorkerId=worker_id, BonusAmount=fmt(amount)[1:], AssignmentId=assignment_id,
                       Reason=reason, UniqueRequestToken=token)
        except ClientError as e:
            _, turk, _, message = error_code(e)
            if turk == "AWS.MechanicalTurk.DuplicateRequest" or (
                    "already" in message.lower() and ("token" in message.lower() or "processed" in message.lower())):
                log.info("bonus %s was already sent", token)
                return "already"
            self.guard.refund(cost)
            raise
        return "sent"

    def bonus_listed(self, assignment_id: str, amount_cents: int, reason: str) -> bool:
        """Whether MTurk lists a bonus of ``amount_cents`` with ``reason`` for the assignment."""
        def listing() -> bool:
            pages = self.client.get_paginator("list_bonus_payments").paginate(
                AssignmentId=assignment_id, PaginationConfig={"PageSize": self.page_size})
            return any(cents(b.get("BonusAmount", "0")) == amount_cents and b.get("Reason") == reason
                       for page in pages for b in page.get("BonusPayments", []))

        return self._retrying(listing)

    def close(self) -> None:
        pass
