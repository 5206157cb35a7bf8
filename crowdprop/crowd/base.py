"""The crowd seam: the one interface between the controller and any crowd.

Every operation the campaign loop and the commands (run, hits, bonus, status,
estimate) ask of a crowd is a method of :class:`CrowdBackend`; nothing calls a
crowd through ``hasattr``/``getattr``. An operation a crowd does not offer
answers :data:`UNSUPPORTED` (or ``None`` where a value is asked for) instead of
being missing.

Replay, sandbox and production differ only in which backend (and which
endpoint) is plugged in here (:func:`crowdprop.crowd.factory.make_backend`).
Backends never touch the run directory; the campaign loop records everything
they return before acting on it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, Sequence, TypedDict, runtime_checkable

from ..money import cents as _cents



class CrowdKind(StrEnum):
    """``campaign.json["crowd"]["kind"]``: which crowd a run directory works with."""

    SIMULATED = "simulated"
    """In process, no HTTP (:class:`crowdprop.crowd.simulated.SimulatedCrowd`)."""
    MTURK_LOCAL = "mturk-local"
    """A local MTurk-compatible endpoint with simulated workers, started by the process."""
    MTURK = "mturk"
    """Amazon Mechanical Turk (sandbox, production) or an endpoint given by URL."""


class BlockKind(StrEnum):
    """How a worker is kept out of a campaign (the ``kind`` column of the blocks table)."""

    SOFT = "soft"
    """The campaign's blocked qualification (no notification; reversible)."""
    HARD = "hard"
    """MTurk CreateWorkerBlock."""
    QUALIFICATION = "qualification"
    """Failed the qualification test: the crowd keeps them out itself."""


UNSUPPORTED = "unsupported"
"""The answer of an optional operation (:meth:`CrowdBackend.send_bonus`, :meth:`CrowdBackend.extend`)
on a crowd that does not offer it: nothing was sent and nothing is owed."""


class HitState(TypedDict):
    """What a crowd says of one HIT (:meth:`CrowdBackend.hit_state`)."""

    pending: int
    """Assignments accepted and not yet submitted."""
    available: int
    """Slots still open to workers."""
    gone: bool
    """Whether the crowd no longer knows the HIT (disposed, or on an endpoint that stopped)."""


@dataclass(frozen=True)
class Question:
    """One yes/no question: "is this mask a correct outline of a <class>?"."""

    question_id: str
    """Unique within the campaign; also the form field name on the worker page."""
    mask_row: int
    """Row of the mask in masks.parquet."""
    is_gold: bool = False
    gold_label: bool | None = None
    """The known answer of a gold question (None for ordinary questions)."""


@dataclass(frozen=True)
class HitRequest:
    """Everything a backend needs to publish one HIT."""

    token: str
    """Deterministic per (campaign, round, batch); <= 64 characters."""
    round: int
    batch: int
    questions: tuple[Question, ...]
    assignments: int
    reward_usd: float
    campaign: str = "crowdprop"

    @property
    def reward_cents(self) -> int:
        """The reward per assignment in cents (exact: rewards are whole cents)."""
        return _cents(self.reward_usd)


def content_key(question_ids: Sequence[str]) -> str:
    """A key naming what a HIT asks (its question ids, in order): simulated workers answer
    ``pool.answer(worker, f"{key}:{question_id}", truth)``, so two run directories asking the
    same questions (copies of one campaign) get the same simulated answers whatever their tokens."""
    return hashlib.blake2b("\x1f".join(question_ids).encode(), digest_size=10).hexdigest()


@dataclass
class Assignment:
    """One worker's submitted work on one HIT."""

    assignment_id: str
    hit_id: str
    worker_id: str
    answers: dict[str, bool]
    """question_id -> True ("yes, the mask is correct") / False."""
    work_seconds: float
    accept_time: float = 0.0
    submit_time: float = 0.0
    flag: str | None = None
    """Set when the submission is malformed (unknown question id, missing or
    malformed answer...). A flagged assignment's answers are never used."""
    status: str = "Submitted"
    """``Submitted``, or ``Approved`` / ``Rejected`` when the crowd settled it (polled with ``settled=True``)."""
    reward_cents: int | None = None
    """The reward of the assignment's HIT as the crowd reports it (MTurk's GetHIT), when known."""


class SpendGuard(Protocol):
    """What the round loop asks of a crowd's budget guard (crowd.spend.BudgetGuard): the spend
    committed so far and the cap in force, before anything more is published or paid."""

    def update(self, committed_cents: int, cap_cents: int | None = None) -> None: ...


@runtime_checkable
class CrowdBackend(Protocol):
    """Every operation the campaign loop and the commands ask of a crowd.

    Implementations: :class:`crowdprop.crowd.simulated.SimulatedCrowd`,
    :class:`crowdprop.crowd.mturk.MTurkBackend` and the resumable
    :class:`crowdprop.crowd.resume.MTurkCrowd` around it. ``tests/crowd/test_conformance.py``
    runs the same checks on each.
    """

    name: str
    """``"simulated"`` or ``"mturk"`` (logs and messages)."""

    def publish(self, hit: HitRequest, *, admitted: bool = False) -> str:
        """Put one HIT in front of workers and return its HIT id. Idempotent on ``hit.token``:
        publishing the same token again returns the same HIT id and creates nothing (MTurk's
        ``UniqueRequestToken``). ``admitted``: the caller's ledger counted the HIT's cost
        already, so the budget guard does not count it again."""
        ...

    def poll(self, hit_ids: Sequence[str], *, settled: bool = False) -> list[Assignment]:
        """Every *submitted* assignment of these HITs not settled yet, answers parsed and
        checked against what was asked; with ``settled=True`` also those approved or rejected
        (MTurk approves on its own after ``AutoApprovalDelayInSeconds``), each with its
        :attr:`Assignment.status`."""
        ...

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> str | None:
        """Approve (pay) or reject one assignment; return the state the crowd holds afterwards
        (``"Approved"`` / ``"Rejected"``). Safe to call again: an assignment already settled
        (by an earlier call, or approved automatically) keeps that state, which is returned."""
        ...

    def expire(self, hit_id: str) -> None:
        """Stop a HIT from taking new workers (work already accepted may still arrive; the
        controller re-asks its unanswered questions in a later round). Again is harmless."""
        ...

    def hit_state(self, hit_id: str) -> HitState:
        """``{"pending", "available", "gone"}`` of a HIT. It is done when nothing is pending or
        available and all its submitted work is settled."""
        ...

    def extend(self, hit_id: str, assignments: int, token: str) -> str:
        """Add ``assignments`` slots to a HIT, once per ``token``. ``"sent"``, ``"already"`` (the
        token was processed before), or :data:`UNSUPPORTED`."""
        ...

    def block(self, worker_id: str, kind: BlockKind | str) -> None:
        """Keep a worker out of the campaign (:class:`BlockKind`). Again is harmless."""
        ...

    @property
    def failed_qualification(self) -> set[str]:
        """Workers the qualification test keeps out (empty without a test)."""
        ...

    @property
    def guard(self) -> SpendGuard | None:
        """The budget guard the crowd checks before spending (None: the crowd spends nothing real)."""
        ...

    def send_bonus(self, *, worker_id: str, assignment_id: str, reason: str, token: str,
                   amount_usd: float | None = None, amount_cents: int | None = None, admitted: bool = False) -> str:
        """Pay a bonus once per ``token``: ``"sent"``, ``"already"``, or :data:`UNSUPPORTED` (a
        simulated crowd: the bonus is in the books only)."""
        ...

    def balance(self) -> float | None:
        """The account's available balance in dollars; None when the crowd has no account."""
        ...

    def close(self) -> None:
        """Release what the crowd holds (connections, an endpoint it started). Again is harmless."""
        ...


@dataclass(frozen=True)
class Fees:
    """MTurk's commission, in integer cents: 20 % of reward and bonus (rounded half up), at least
    1 cent per assignment; 40 % when the HIT has 10 or more assignments. Rejected work is not
    charged. The one fee function of crowdprop (loop, MTurk backend, local endpoint, reports)."""

    percent: int = 20
    percent_large: int = 40
    large_from: int = 10
    minimum_cents: int = 1

    def assignment_fee_cents(self, reward_cents: int, assignments_per_hit: int) -> int:
        pct = self.percent_large if assignments_per_hit >= self.large_from else self.percent
        return max(self.minimum_cents, (pct * int(reward_cents) + 50) // 100)

    def bonus_fee_cents(self, bonus_cents: int) -> int:
        return max(self.minimum_cents, (self.percent * int(bonus_cents) + 50) // 100)

    def hit_cost_cents(self, reward_cents: int, assignments_per_hit: int) -> int:
        """Most a HIT can cost: every assignment approved, fees included."""
        return assignments_per_hit * (int(reward_cents) + self.assignment_fee_cents(reward_cents, assignments_per_hit))

    # dollar views (messages, estimates shown to people)
    def assignment_fee(self, reward_usd: float, assignments_per_hit: int) -> float:
        return self.assignment_fee_cents(_cents(reward_usd), assignments_per_hit) / 100

    def bonus_fee(self, bonus_usd: float) -> float:
        return self.bonus_fee_cents(_cents(bonus_usd)) / 100

    def hit_cost(self, reward_usd: float, assignments_per_hit: int) -> float:
        return self.hit_cost_cents(_cents(reward_usd), assignments_per_hit) / 100
