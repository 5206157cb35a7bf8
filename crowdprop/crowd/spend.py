"""The spend guard of an MTurk crowd: a HIT or bonus is refused before the call that could
spend past the campaign's budget cap (integer cents, MTurk's fees included).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BudgetExhausted
from ..money import fmt
from .base import Fees, HitRequest


@dataclass
class BudgetGuard:
    """Refuses a HIT or bonus whose maximum cost would pass the cap (integer cents).

    The campaign loop owns the ledger (:mod:`crowdprop.campaign.ledger`): before it
    publishes, it sets :attr:`committed_cents` (money paid plus the most that the
    live HITs can still cost) with :meth:`update`. The guard adds what it let
    through since the last update, so a round that publishes many HITs cannot
    pass the cap between two updates.
    """

    cap_cents: int
    committed_cents: int = 0
    fees: Fees = field(default_factory=Fees)
    pending_cents: int = 0

    def update(self, committed_cents: int, cap_cents: int | None = None) -> None:
        self.committed_cents = int(committed_cents)
        if cap_cents is not None:
            self.cap_cents = int(cap_cents)
        self.pending_cents = 0

    def _admit(self, cost: int, what: str) -> None:
        if self.committed_cents + self.pending_cents + cost > self.cap_cents:
            raise BudgetExhausted(
                f"budget: {what} could cost {fmt(cost)}, and {fmt(self.committed_cents + self.pending_cents)} of "
                f"the {fmt(self.cap_cents)} cap ([campaign] budget_usd) is spent or committed; not published")
        self.pending_cents += cost

    def admit_hit(self, hit: HitRequest) -> int:
        cost = self.fees.hit_cost_cents(hit.reward_cents, hit.assignments)
        self._admit(cost, f"HIT {hit.token} ({hit.assignments} x ({fmt(hit.reward_cents)} + fee))")
        return cost

    def admit_bonus(self, bonus_cents: int) -> int:
        cost = int(bonus_cents) + self.fees.bonus_fee_cents(bonus_cents)
        self._admit(cost, f"a bonus of {fmt(bonus_cents)} (+ fee)")
        return cost

    def refund(self, cost: int) -> None:
        """Give back a cost admitted for a call that did not happen."""
        self.pending_cents = max(0, self.pending_cents - int(cost))
