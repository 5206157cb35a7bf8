"""The crowd seam: the one narrow interface between the controller and any crowd.

A backend does four things, and nothing else:

``publish(hit)``
    Put one HIT (a batch of yes/no questions) in front of workers. Must be
    idempotent on ``hit.token``: publishing the same token twice returns the
    same HIT id and creates nothing (MTurk's ``UniqueRequestToken``).
``poll(hit_ids, settled=False)``
    Return every *submitted* assignment of these HITs that has not been settled
    yet, with the answers parsed and checked against what was asked; with
    ``settled=True`` also those already approved or rejected (MTurk approves
    submitted work on its own after ``AutoApprovalDelayInSeconds``), each with
    its :attr:`Assignment.status`.
``settle(assignment_id, approve, feedback)``
    Approve (pay) or reject one assignment and return the state the crowd holds
    afterwards (``"Approved"`` or ``"Rejected"``). Safe to call again; an
    assignment the crowd already settled otherwise (approved automatically)
    keeps that state, which is returned.
``expire(hit_id)``
    Stop a HIT from taking new workers (its unanswered questions are re-asked by
    the controller in a later round; work already accepted may still arrive).
``hit_state(hit_id)`` (optional)
    ``{"pending": n, "available": n, "gone": bool}``: assignments accepted and
    not yet submitted, slots still open, and whether the HIT no longer exists.
    A HIT is done when nothing is pending or available and all its submitted
    work is settled.

Replay, sandbox and production differ only in which backend (and which
endpoint) is plugged in here. Backends never touch the run directory; the
campaign loop records everything they return before acting on it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from ..money import cents as _cents


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


@runtime_checkable
class CrowdBackend(Protocol):
    name: str

    def publish(self, hit: HitRequest, *, admitted: bool = False) -> str: ...

    def poll(self, hit_ids: Sequence[str], *, settled: bool = False) -> list[Assignment]: ...

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> str | None: ...

    def expire(self, hit_id: str) -> None: ...

    def close(self) -> None: ...


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
