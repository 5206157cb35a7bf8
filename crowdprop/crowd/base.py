"""The crowd seam: the one narrow interface between the controller and any crowd.

A backend does four things, and nothing else:

``publish(hit)``
    Put one HIT (a batch of yes/no questions) in front of workers. Must be
    idempotent on ``hit.token``: publishing the same token twice returns the
    same HIT id and creates nothing (MTurk's ``UniqueRequestToken``).
``poll(hit_ids)``
    Return every *submitted* assignment of these HITs that has not been settled
    yet, with the answers parsed and checked against what was asked.
``settle(assignment_id, approve, feedback)``
    Approve (pay) or reject one assignment. Must be safe to call again for an
    assignment that is already in the requested state.
``expire(hit_id)``
    Stop a HIT from taking new workers (its unanswered questions are re-asked by
    the controller in a later round).

Replay, sandbox and production differ only in which backend (and which
endpoint) is plugged in here. Backends never touch the run directory; the
campaign loop records everything they return before acting on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


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


@runtime_checkable
class CrowdBackend(Protocol):
    name: str

    def publish(self, hit: HitRequest) -> str: ...

    def poll(self, hit_ids: Sequence[str]) -> list[Assignment]: ...

    def settle(self, assignment_id: str, approve: bool, feedback: str | None = None) -> None: ...

    def expire(self, hit_id: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Fees:
    """MTurk's commission: 20 % of reward and bonus, at least $0.01 per assignment;
    40 % when the HIT has 10 or more assignments. Rejected work is not charged."""

    rate: float = 0.20
    rate_large: float = 0.40
    large_from: int = 10
    minimum: float = 0.01

    def assignment_fee(self, reward_usd: float, assignments_per_hit: int) -> float:
        rate = self.rate_large if assignments_per_hit >= self.large_from else self.rate
        return round(max(self.minimum, rate * reward_usd) + 1e-9, 2)

    def bonus_fee(self, bonus_usd: float) -> float:
        return round(max(self.minimum, self.rate * bonus_usd) + 1e-9, 2)

    def hit_cost(self, reward_usd: float, assignments_per_hit: int) -> float:
        """Most a HIT can cost: every assignment approved."""
        return assignments_per_hit * (reward_usd + self.assignment_fee(reward_usd, assignments_per_hit))


@dataclass
class PublishedHit:
    hit_id: str
    request: HitRequest
    extra: dict = field(default_factory=dict)
