"""Assignments and money at the local endpoint: ListAssignmentsForHIT, GetAssignment,
ApproveAssignment, RejectAssignment, SendBonus, ListBonusPayments and GetAccountBalance.

Approving charges the reward and MTurk's fee (:meth:`~.core.ServiceCore._approve`); a bonus
charges its amount and fee at once and refuses a repeated ``UniqueRequestToken`` for 24
hours. Rejected work costs nothing.
"""
from __future__ import annotations

from typing import Mapping

from .params import ParamChecks
from .records import PUBLIC_STATES, TOKEN_LIFETIME_S, cents_of, usd_text


class AssignmentOperations(ParamChecks):
    """The assignment, bonus and balance operations."""

    def _op_list_assignments_for_hit(self, p: Mapping) -> dict:
        hit = self._get_hit(self._entity(p, "HITId"))
        statuses = p.get("AssignmentStatuses") or list(PUBLIC_STATES)
        bad = [s for s in statuses if s not in PUBLIC_STATES]
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
        amount = cents_of(self._str(p, "BonusAmount", required=True), "BonusAmount")
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
        self._bonuses.append({"WorkerId": worker, "BonusAmount": usd_text(amount), "AssignmentId": aid,
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
        return {"AvailableBalance": usd_text(max(0, self._balance_cents))}
