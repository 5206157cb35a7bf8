"""The crowd's side of a round: freezing the plan, publishing, polling, settling, the ledger.

:class:`CrowdWork` is mixed into :class:`crowdprop.campaign.loop.Campaign`. Its promises:

- A round's plan (questions, HITs with their rewards, assignments and tokens) is
  journaled before the first CreateHIT (:mod:`.roundplan`) and a resumed round
  finishes exactly that plan. A HIT token is a hash of what the HIT asks, the
  campaign id and the run directory's nonce (:func:`crowdprop.hits.batching.content_token`).
- Every HIT ever published is polled until it is done: all its slots settled, or
  nothing pending or available on the crowd (expired, and every worker who had
  accepted it submitted or ran out of time). Work arriving for a HIT of an
  earlier round (a late submission) is recorded, judged by the same rules, paid
  or rejected, and counted in the round it arrives in. When the policy has nothing
  left to ask while such HITs are open, a settle-only round waits for them.
- Work MTurk approved on its own (after ``AutoApprovalDelayInSeconds``, with or
  without a decision of ours on its way) is recorded as approved and paid, as
  MTurk holds it; the rules' verdict still decides whether its answers count.
- Money is integer cents from one ledger (:mod:`.ledger`): each assignment costs
  the reward its HIT was published with (MTurk's figure when it reports one) plus
  the fee; before each CreateHIT, what is paid plus the most the live HITs can
  still cost plus the new HIT must fit under the cap, whatever the cap is now.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..config import Config
from ..crowd.base import Assignment, CrowdBackend, Fees
from ..errors import BudgetExhausted, StateError
from ..hits.batching import content_token
from ..money import cap_cents, fmt
from . import ledger
from . import roundplan as rp
from .roundplan import RoundPlanned
from .store import RunDir

log = logging.getLogger(__name__)

ASSIGNMENT_COLUMNS = ["assignment_id", "hit_id", "token", "worker_id", "round", "hit_round", "n_questions", "n_gold",
                      "n_gold_correct", "work_seconds", "flag", "approved", "judged_ok", "settled_by", "reason",
                      "feedback", "reward_cents", "fee_cents"]
"""``approved``: MTurk's final state (paid); ``judged_ok``: the rules' verdict; ``settled_by``:
``crowdprop``, or ``mturk`` for work MTurk approved on its own; ``hit_round``: the round its HIT
was published in (earlier than ``round`` for late work); ``feedback``: the message sent to the worker
with the approval or rejection (None when MTurk settled it)."""
HIT_COLUMNS = ["token", "hit_id", "round", "batch", "n_questions", "assignments", "reward_cents",
               "n_submitted", "expired"]
HITS_DONE_COLUMNS = ["hit_id", "token", "hit_round", "round"]
ANSWER_COLUMNS = ["question_id", "round", "mask_row", "worker_id", "assignment_id", "hit_id", "label",
                  "is_gold", "used", "kind"]
"""HITs found done in ``round``: nothing more can arrive for them."""
SPEND_COLUMNS = ledger.SPEND_COLUMNS
AUTO_NOTE = "approved by MTurk on its own (AutoApprovalDelayInSeconds) before crowdprop settled it"


@dataclass
class HitInfo:
    """A published HIT as the books know it."""

    token: str
    hit_id: str
    round: int
    batch: int
    assignments: int
    reward_cents: int
    asked: _Asked
    """Its questions (in the HIT's order), as arrays."""
    current: bool
    """Published in the round in progress (else a HIT of an earlier round still open)."""
    recorded: int = 0
    """Assignments of it recorded in committed rounds."""
    expired: bool = False


class CrowdWork:
    """Publishing, polling and settling for :class:`~crowdprop.campaign.loop.Campaign` (a mixin)."""

    # set by Campaign.__init__
    run_dir: RunDir
    backend: CrowdBackend
    cfg: Config
    fees: Fees
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    judge: Callable
    campaign_id: str
    _round: int

    verify_committed = False
    """Check the running committed total of :meth:`_publish` against the books before each
    CreateHIT and after the last (a debug aid the tests turn on; each check reads the journal)."""
    committed_checks = 0
    """How many of those checks passed (all campaigns of the process)."""

    def _make_plan(self, r: int, state) -> RoundPlanned:  # the policy's side: Campaign._make_plan
        raise NotImplementedError

    # -- the round's plan -----------------------------------------------------------------------
    def _round_plan(self, r: int, state, *, settle_only: bool = False) -> RoundPlanned:
        """Round ``r``'s frozen plan, or a new one (planned, fitted to the budget, frozen);
        ``settle_only``: a round that asks nothing (past the round limit)."""
        run = self.run_dir
        restored = rp.restore(run, r)
        if restored is not None:
            planned, meta = restored
            changed = rp.changes(run, meta)
            if changed:
                budget = " (a budget change applies now to HITs not yet published)" \
                    if "campaign.budget_usd" in changed else ""
                log.warning("round %d continues as it was planned before these changed: %s; its HITs are live, "
                            "so the changes take effect from round %d%s", r, ", ".join(changed), r + 1, budget)
            return planned
        legacy = run.journal_read(r, "questions")
        if legacy is not None and run.journal_lines(r, "published"):
            planned = self._legacy_plan(r, state, legacy)
            rp.freeze(run, r, planned)
            return planned
        if settle_only:
            planned = RoundPlanned(None, None, [], stop="round limit reached")
        else:
            planned = self._make_plan(r, state)
        if planned.stop is None:
            planned = self._fit_budget(r, planned)
        if planned.stop is not None:
            if not self._open_hits(r):
                return planned
            from ..policy.controller import RoundPlan

            log.info("round %d: nothing to ask (%s), but HITs of earlier rounds can still receive work: "
                     "waiting for them", r, planned.stop)
            planned = RoundPlanned(RoundPlan(), run.empty_like_last("questions"), [], settle_only=True)
        else:
            planned = self._tokens(planned)
        rp.freeze(run, r, planned)
        return planned

    def _tokens(self, planned: RoundPlanned) -> RoundPlanned:
        """Give every HIT its content token (:func:`content_token`), in the questions table too."""
        new = {h.token: content_token(self.campaign_id, self.run_dir.nonce, h) for h in planned.hits}
        hits = [dataclasses.replace(h, token=new[h.token]) for h in planned.hits]
        assert planned.questions is not None  # a plan with HITs has its questions
        q = planned.questions.copy()
        q["token"] = q["token"].map(new).fillna(q["token"])
        return dataclasses.replace(planned, questions=q, hits=hits)

    def _fit_budget(self, r: int, planned: RoundPlanned) -> RoundPlanned:
        """Keep the HITs (in order) whose most cost fits under the cap with what is paid and what the
        HITs still open can cost; stop when none fits."""
        cap = cap_cents(self.cfg.campaign.budget_usd)
        committed = self._committed_cents(r, self._open_hits(r))
        kept = []
        for h in planned.hits:
            c = self._hit_most_cents(h)
            if committed + c > cap:
                break
            kept.append(h)
            committed += c
        if planned.hits and not kept:
            spent = ledger.spent_cents(self.run_dir)
            return dataclasses.replace(planned, stop=f"budget reached ({fmt(spent)} of "
                                                     f"${self.cfg.campaign.budget_usd:.2f} spent)")
        if len(kept) < len(planned.hits):
            log.warning("round %d: budget allows %d of %d HITs", r, len(kept), len(planned.hits))
            tokens = {h.token for h in kept}
            q = planned.questions
            assert q is not None  # a plan with HITs has its questions
            planned = dataclasses.replace(planned, hits=kept,
                                          questions=q[q["token"].isin(tokens)].reset_index(drop=True))
        return planned

    def _legacy_plan(self, r: int, state, journaled: pd.DataFrame) -> RoundPlanned:
        """A round started by a crowdprop that journaled only its questions: planned again, and
        accepted only if it asks exactly what was journaled (same questions, masks and tokens)."""
        planned = self._make_plan(r, state)
        cols = ["question_id", "mask_row", "token"]
        tokens = set(journaled["token"])
        q = planned.questions if planned.questions is not None else pd.DataFrame(columns=cols)
        mine = q[q["token"].isin(tokens)].reset_index(drop=True)
        same = len(mine) == len(journaled) and all(
            mine[c].astype(str).tolist() == journaled[c].astype(str).tolist() for c in cols)
        if not same:
            raise StateError(f"{self.run_dir.path}: round {r} was started by an older crowdprop that did not "
                             "journal its HITs, and planning it again asks other questions (the configuration or "
                             "gold pool changed); restore them to finish the round")
        return dataclasses.replace(planned, questions=mine, hits=[h for h in planned.hits if h.token in tokens])

    # -- the books ------------------------------------------------------------------------------
    def _open_hits(self, r: int) -> dict[str, HitInfo]:
        """HITs of committed rounds (this directory's) that are not done yet, by HIT id."""
        run = self.run_dir
        hits = run.read_rounds("hits")
        if len(hits) == 0:
            return {}
        done = run.read_rounds("hits_done")
        gone = set(done["hit_id"]) if len(done) else set()
        open_ = hits[(hits["round"].to_numpy() >= run.owned_from_round) & ~hits["hit_id"].isin(gone).to_numpy()]
        if len(open_) == 0:
            return {}
        questions = run.read_rounds("questions")
        by_token = {t: g for t, g in questions[questions["token"].isin(set(open_["token"]))].groupby("token")}
        asg = run.read_rounds("assignments")
        counts = asg.groupby("hit_id").size().to_dict() if len(asg) else {}
        rewards = ledger.hits_reward_cents(open_)
        extra = ledger.extra_assignments(run)  # `crowdprop hits extend --assignments` (counted whole: a bound)
        out = {}
        for (_, h), reward in zip(open_.iterrows(), rewards):
            q = by_token.get(h["token"])
            if q is None:
                q = questions.iloc[:0]
            q = q.sort_values("position", kind="stable") if "position" in q else q
            out[h["hit_id"]] = HitInfo(h["token"], h["hit_id"], int(h["round"]), int(h["batch"]),
                                       int(h["assignments"]) + extra.get(h["hit_id"], 0), int(reward),
                                       _Asked.of(q.reset_index(drop=True)), current=False,
                                       recorded=int(counts.get(h["hit_id"], 0)), expired=bool(h.get("expired", False)))
        return out

    def _hit_most_cents(self, h) -> int:
        """The most HIT ``h`` can cost: every assignment approved, with its whole gold bonus."""
        n_gold = sum(bool(q.is_gold) for q in h.questions)
        return self.fees.hit_cost_cents(h.reward_cents, h.assignments) + h.assignments * ledger.max_bonus_cents(
            self.cfg.crowd.bonus_cents_per_gold_correct, n_gold)

    def _committed_cents(self, r: int, infos: dict[str, HitInfo], paid: tuple[int, dict] | None = None) -> int:
        """Paid (committed rounds and round ``r``'s journal) plus the most the HITs in ``infos``
        can still cost: each slot not settled, at its HIT's reward and fee. ``paid``: what
        :meth:`_paid` returned, when nothing was settled since."""
        base, settled_per_hit = paid if paid is not None else self._paid(r)
        return base + sum(self._open_cents(hid, info, settled_per_hit) for hid, info in infos.items())

    def _open_cents(self, hit_id: str, info: HitInfo, settled_per_hit: dict[str, int]) -> int:
        """The most HIT ``hit_id``'s slots not settled can still cost (``settled_per_hit``: the
        assignments settled in the round's journal, per HIT), at its reward and fee, each with its
        whole gold bonus."""
        slots = info.assignments - info.recorded - settled_per_hit.get(hit_id, 0)
        total = ledger.hit_exposure_cents(info.reward_cents, info.assignments, slots)
        per_gold = self.cfg.crowd.bonus_cents_per_gold_correct
        if per_gold and slots > 0 and info.asked.n:  # each slot may earn the whole gold bonus
            total += slots * ledger.max_bonus_cents(per_gold, len(info.asked.golds))
        return total

    def _check_committed(self, r: int, infos: dict[str, HitInfo], committed: int) -> None:
        """With :attr:`verify_committed`: the running total of :meth:`_publish` is what
        :meth:`_committed_cents` recomputes from the books (paid read again from the journal)."""
        full = self._committed_cents(r, infos)
        if committed != full:
            raise AssertionError(f"round {r}: running committed total {committed} cents, the books say {full} "
                                 f"({len(infos)} HITs)")
        CrowdWork.committed_checks += 1

    def _paid(self, r: int) -> tuple[int, dict[str, int]]:
        """Cents paid (committed rounds and round ``r``'s journal), and assignments settled in the
        journal per HIT."""
        run = self.run_dir
        settled = ledger.journal_settlements(run, r)
        recv = run.journal_read(r, "received")
        settled_per_hit: dict[str, int] = {}
        if recv is not None and len(recv) and settled:
            for aid, hid in zip(recv["assignment_id"], recv["hit_id"]):
                if aid in settled:
                    settled_per_hit[hid] = settled_per_hit.get(hid, 0) + 1
        return (ledger.spent_cents(run) + sum(ledger.settled_record_cents(x) for x in settled.values())
                + ledger.journal_bonus_cents(run, r), settled_per_hit)

    # -- publishing -----------------------------------------------------------------------------
    def _publish(self, r: int, planned: RoundPlanned, infos: dict[str, HitInfo]) -> None:
        """Publish the plan's HITs (tokens journaled before each CreateHIT) while they fit under the
        cap; adds them to ``infos`` (current). A lowered cap stops new HITs and expires this round's
        HITs that nobody has started."""
        run = self.run_dir
        lines = run.journal_lines(r, "published")
        known = {x["token"]: x["hit_id"] for x in lines if "hit_id" in x}
        created = {x["token"] for x in lines}  # CreateHIT may have happened: adopted whatever the cap now
        expired = {x["hit_id"] for x in run.journal_lines(r, "expired")}
        cap = cap_cents(self.cfg.campaign.budget_usd)
        guard = self.backend.guard
        questions = planned.questions
        assert questions is not None  # a plan with HITs has its questions
        table = _QuestionArrays(questions)  # read once; each HIT takes its rows
        held_back = 0
        # Nothing is settled while publishing, so what is paid stays as it is, and the most the live
        # HITs can cost changes only by the HITs added here: a running total, kept as each is added
        # (summing every live HIT before each CreateHIT took time quadratic in a round's HITs).
        paid = self._paid(r)
        settled_per_hit = paid[1]
        committed = self._committed_cents(r, infos, paid)
        extra = ledger.extra_assignments(run)
        for h in planned.hits:
            if h.token not in created:
                if held_back:
                    held_back += 1
                    continue
                if self.verify_committed:
                    self._check_committed(r, infos, committed)
                if committed + self._hit_most_cents(h) > cap:
                    held_back += 1
                    continue
                if guard is not None:
                    guard.update(committed, cap)
                run.journal_append(r, "published", {"token": h.token, "event": "create"})
            try:  # idempotent on the token; a HIT journaled before was admitted then
                hit_id = self.backend.publish(h, admitted=True) if h.token in created else self.backend.publish(h)
            except BudgetExhausted as e:
                log.warning("round %d: %s", r, e)
                held_back += 1
                continue
            except Exception as e:
                if _never_sent(e):  # nothing reached the crowd: the campaign may still move (backends.started)
                    run.journal_append(r, "published", {"token": h.token, "event": "unsent"})
                raise
            if known.get(h.token) not in (None, hit_id):
                raise StateError(f"backend returned HIT {hit_id} for token {h.token}, journal says {known[h.token]}")
            if h.token not in known:
                run.journal_append(r, "published", {"token": h.token, "hit_id": hit_id})
            info = HitInfo(h.token, hit_id, r, h.batch, h.assignments + extra.get(hit_id, 0), h.reward_cents,
                           table.hit(h.token), current=True, expired=hit_id in expired)
            before = infos.get(hit_id)
            if before is not None:  # the same HIT again (a crowd answering an earlier id): replaced in the sum too
                committed -= self._open_cents(hit_id, before, settled_per_hit)
            infos[hit_id] = info
            committed += self._open_cents(hit_id, info, settled_per_hit)
        if held_back:
            log.warning("round %d: %d HIT(s) not published: the budget cap ([campaign] budget_usd = $%.2f) leaves "
                        "no room for them", r, held_back, self.cfg.campaign.budget_usd)
        if self.verify_committed:
            self._check_committed(r, infos, committed)
        if committed > cap:
            recv = run.journal_read(r, "received")
            started = set(recv["hit_id"]) if recv is not None and len(recv) else set()
            idle = [i for i in infos.values() if i.current and not i.expired and i.hit_id not in started]
            for info in idle:
                self._expire(r, info)
            if idle:
                log.warning("round %d: the live HITs could cost more than the budget cap now allows: %d HIT(s) "
                            "nobody had started were taken off the market", r, len(idle))

    def _expire(self, r: int, info: HitInfo) -> None:
        self.backend.expire(info.hit_id)
        self.run_dir.journal_append(r, "expired", {"hit_id": info.hit_id, "token": info.token})
        info.expired = True

    # -- polling --------------------------------------------------------------------------------
    def _collect(self, r: int, infos: dict[str, HitInfo]) -> list[Assignment]:
        """Poll every HIT in ``infos`` (this round's and earlier rounds' open ones) until this round's
        HITs are answered or the round times out (a settle-only round: until the open HITs are done).
        Every assignment not in the books yet is journaled before anything is done with it."""
        run = self.run_dir
        prev = run.journal_read(r, "received")
        received: dict[str, Assignment] = {}
        if prev is not None:
            for rec in prev.to_dict("records"):
                received[rec["assignment_id"]] = assignment_from_record(rec)
        books = self._books
        current = {h: i for h, i in infos.items() if i.current}
        deadline = self.clock() + self.cfg.crowd.round_timeout_s
        ids = list(infos)
        while True:
            new = [a for a in self.backend.poll(ids, settled=True)
                   if a.assignment_id not in received and a.assignment_id not in books]
            if new:
                for a in new:
                    received[a.assignment_id] = a
                # Recorded before anything is done with them.
                run.journal_write(r, "received", assignments_frame(received.values(), infos))
            per_hit: dict[str, int] = {}
            for a in received.values():
                per_hit[a.hit_id] = per_hit.get(a.hit_id, 0) + 1
            if current:
                # a HIT taken off the market (`crowdprop hits expire`) is finished once nothing more can arrive
                if all(per_hit.get(h, 0) >= i.assignments
                       or (i.expired and self._done(i, per_hit.get(h, 0), books | set(received)))
                       for h, i in current.items()):
                    break
            else:
                known = books | set(received)
                if all(self._done(i, per_hit.get(h, 0), known) for h, i in infos.items()):
                    break
            if self.clock() >= deadline:
                late = [i for h, i in infos.items() if not i.expired and per_hit.get(h, 0) + i.recorded < i.assignments
                        and (i.current or not current)]
                for i in late:
                    self._expire(r, i)
                if current:
                    log.warning("round %d: timed out; %d HITs expired, their questions will be asked again",
                                r, sum(i.current for i in late))
                else:
                    log.warning("round %d: timed out waiting for work on HITs of earlier rounds; the next run "
                                "polls them again", r)
                break
            self.sleep(self.cfg.crowd.poll_interval_s)
        return sorted(received.values(), key=lambda a: a.assignment_id)

    def _done(self, info: HitInfo, received: int, known: set[str]) -> bool:
        """Whether nothing more can arrive for a HIT: every slot received, or the crowd has
        nothing pending or available for it (expired, or gone) and lists no assignment of it
        that is not in ``known`` (work submitted after the last poll). GetHIT comes first: work
        submitted after the listing was pending at GetHIT, so nothing slips between the two."""
        if info.recorded + received >= info.assignments:
            return True
        st = self.backend.hit_state(info.hit_id)
        if st.get("gone"):
            return True
        if st.get("available", 0) > 0 and not info.current and not info.expired:
            # a HIT of an earlier round still on the market (a run stopped before its expiry)
            self._expire(self._round, info)
            st = self.backend.hit_state(info.hit_id)
        if st.get("pending", 0) or st.get("available", 0):
            return False
        return all(a.assignment_id in known for a in self.backend.poll([info.hit_id], settled=True))

    # -- settling -------------------------------------------------------------------------------
    def _settle(self, r: int, infos: dict[str, HitInfo], assignments: list[Assignment]):
        """Judge, journal and settle every assignment received; the round's assignments, answers
        and spend tables (late work included, counted in round ``r``).

        Each HIT's questions are arrays (:class:`_Asked`), not filtered per assignment, and the
        answers table is assembled from them in one piece."""
        run = self.run_dir
        settled = ledger.journal_settlements(run, r)
        bonuses = ledger.journal_bonuses(run, r)  # an assignment journals only its own: read once
        ass_rows, spend_rows = [], []
        answers = _AnswerColumns(r)
        for a in assignments:
            info = infos.get(a.hit_id)
            if info is None:
                continue  # a HIT this directory does not own (never happens: polled ids are infos)
            hq = info.asked
            n_gold_ok = 0
            if a.flag is None:
                for qid, lab in hq.golds:
                    if qid in a.answers and bool(a.answers[qid]) == bool(lab):
                        n_gold_ok += 1
            reward = a.reward_cents if a.reward_cents is not None else info.reward_cents
            if reward != info.reward_cents:
                log.warning("HIT %s: MTurk reports a reward of %s, published with %s; MTurk's figure is recorded",
                            a.hit_id, fmt(reward), fmt(info.reward_cents))
            fee = self.fees.assignment_fee_cents(reward, info.assignments)
            rec = settled.get(a.assignment_id)
            if rec is None:
                ok, reason, feedback = self.judge(a, len(hq.golds), n_gold_ok, hq.n, self.cfg)
                rec = {"assignment_id": a.assignment_id, "approve": bool(ok), "judged_ok": bool(ok), "reason": reason,
                       "feedback": feedback, "reward_cents": int(reward), "fee_cents": int(fee), "by": "crowdprop"}
                if a.status in ("Approved", "Rejected"):  # MTurk settled it before we did
                    rec.update(approve=a.status == "Approved", by="mturk",
                               reason=(AUTO_NOTE if a.status == "Approved" else "rejected outside crowdprop")
                               + ("" if ok else f"; the rules would have rejected it: {reason}"))
                run.journal_append(r, "settled", rec)
            final = ledger.final_state(rec)
            sent = None  # the message the worker gets with our approval or rejection
            if rec.get("by") != "mturk":
                approve = bool(rec["approve"])
                sent = rec.get("feedback") if approve else (rec.get("reason") or "rejected")
                state = self.backend.settle(a.assignment_id, approve, sent)
                state = state or ("Approved" if approve else "Rejected")
                if state != final:
                    note = AUTO_NOTE if state == "Approved" else "rejected on MTurk before crowdprop's approval"
                    log.warning("assignment %s: crowdprop decided to %s it, MTurk holds it %s (%s); recorded as "
                                "MTurk holds it", a.assignment_id, "approve" if approve else "reject", state, note)
                    run.journal_append(r, "settled", {"assignment_id": a.assignment_id, "final": state, "note": note})
                    rec = {**rec, "final": state, "note": note}
                    final = state
            approved = final == "Approved"
            judged_ok = bool(rec.get("judged_ok", rec.get("approve")))
            reason = rec.get("reason")
            if rec.get("note") and rec["note"] not in (reason or ""):
                reason = f"{reason}; {rec['note']}" if reason else rec["note"]
            by_mturk = rec.get("by") == "mturk" or (rec.get("final") == "Approved" and not rec["approve"])
            settled_by = "mturk" if by_mturk else "crowdprop"
            paid_reward = int(rec.get("reward_cents", reward)) if approved else 0
            paid_fee = int(rec.get("fee_cents", fee)) if approved else 0
            ass_rows.append((a.assignment_id, a.hit_id, info.token, a.worker_id, r, info.round, hq.n, len(hq.golds),
                             n_gold_ok, float(a.work_seconds), a.flag, approved, judged_ok, settled_by, reason,
                             sent, paid_reward, paid_fee))
            if approved:
                spend_rows.append((r, a.assignment_id, "reward", paid_reward))
                spend_rows.append((r, a.assignment_id, "fee", paid_fee))
                spend_rows += self._gold_bonus(r, a, n_gold_ok if judged_ok else 0, infos, bonuses)
            answers.add(a, hq, judged_ok and a.flag is None)
        ass_df = pd.DataFrame(ass_rows, columns=ASSIGNMENT_COLUMNS)
        for c in ("flag", "reason", "feedback"):
            ass_df[c] = ass_df[c].astype(object)
        ans_df = answers.frame()
        spend_df = pd.DataFrame(spend_rows, columns=SPEND_COLUMNS)
        spend_df["cents"] = spend_df["cents"].astype(np.int64)
        return ass_df, ans_df, spend_df

    def _gold_bonus(self, r: int, a: Assignment, n_gold_ok: int, infos: dict[str, HitInfo],
                    journaled: dict[str, dict] | None = None) -> list[tuple]:
        """Pay ``[crowd] bonus_cents_per_gold_correct`` x golds right for an approved assignment, once:
        journaled (with its UniqueRequestToken) before SendBonus, marked sent after; a resumed round
        sends a journaled bonus again only with the same token and when MTurk lists none for the
        assignment. Returns its spend rows (bonus, bonus_fee). ``journaled``: round ``r``'s
        :func:`ledger.journal_bonuses` as read before settling (kept up to date here); read now
        when not given."""
        run = self.run_dir
        per_gold = self.cfg.crowd.bonus_cents_per_gold_correct
        if journaled is None:
            journaled = ledger.journal_bonuses(run, r)
        rec = journaled.get(a.assignment_id)
        if rec is None:
            amount = per_gold * int(n_gold_ok)
            if amount <= 0:
                return []
            rec = {"assignment_id": a.assignment_id, "worker_id": a.worker_id, "bonus_cents": amount,
                   "fee_cents": self.fees.bonus_fee_cents(amount), "token": ledger.bonus_token(run, a.assignment_id),
                   "golds_right": int(n_gold_ok)}
            cap = cap_cents(self.cfg.campaign.budget_usd)
            committed = self._committed_cents(r, infos)  # this assignment is settled: its slot is no more
            if committed + amount + rec["fee_cents"] > cap:  # room was kept at publishing; a lowered cap
                log.warning("assignment %s: its gold bonus of %s is not paid: the budget cap (%s) leaves no room "
                            "(%s paid or committed)", a.assignment_id, fmt(amount), fmt(cap), fmt(committed))
                return []
            run.journal_append(r, "bonuses", rec)  # counted in the ledger from here on
            journaled[a.assignment_id] = rec
        if not rec.get("sent"):
            reason = (f"{rec['golds_right']} check question(s) answered right, "
                      f"{per_gold} cent(s) each. Thank you!")
            # a simulated crowd answers UNSUPPORTED: the bonus is in the books only
            self.backend.send_bonus(worker_id=rec["worker_id"], assignment_id=a.assignment_id,
                                    amount_cents=int(rec["bonus_cents"]), reason=reason, token=rec["token"],
                                    admitted=True)
            run.journal_append(r, "bonuses", {"assignment_id": a.assignment_id, "sent": True})
            journaled[a.assignment_id] = rec = {**rec, "sent": True}
        return [(r, a.assignment_id, "bonus", int(rec["bonus_cents"])),
                (r, a.assignment_id, "bonus_fee", int(rec["fee_cents"]))]

    def _hit_tables(self, r: int, infos: dict[str, HitInfo], ass_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Round ``r``'s hits table (its own HITs) and the HITs found done in it (any round)."""
        per_hit = ass_df.groupby("hit_id").size().to_dict() if len(ass_df) else {}
        hits = pd.DataFrame([(i.token, i.hit_id, r, i.batch, i.asked.n, i.assignments, i.reward_cents,
                              int(per_hit.get(h, 0)), bool(i.expired)) for h, i in infos.items() if i.current],
                            columns=HIT_COLUMNS)
        known = self._books | set(ass_df["assignment_id"])
        done = [(h, i.token, i.round, r) for h, i in infos.items() if self._done(i, int(per_hit.get(h, 0)), known)]
        return hits, pd.DataFrame(done, columns=HITS_DONE_COLUMNS)

    # -- a round on the crowd -------------------------------------------------------------------
    def _crowd_round(self, r: int, planned: RoundPlanned):
        """Publish, collect and settle round ``r`` (and the open HITs of earlier rounds)."""
        self._round = r
        asg = self.run_dir.read_rounds("assignments")
        self._books = set(asg["assignment_id"]) if len(asg) else set()  # assignments of committed rounds
        infos = self._open_hits(r)
        self._publish(r, planned, infos)
        assignments = self._collect(r, infos)
        ass_df, ans_df, spend_df = self._settle(r, infos, assignments)
        hits_df, done_df = self._hit_tables(r, infos, ass_df)
        late = int((ass_df["hit_round"] < r).sum()) if len(ass_df) else 0
        auto = int((ass_df["settled_by"] == "mturk").sum()) if len(ass_df) else 0
        if late or auto:
            log.info("round %d: %d late assignment(s) for HITs of earlier rounds, %d approved by MTurk on its own",
                     r, late, auto)
        still = len(infos) - len(done_df)
        if still:
            log.info("round %d: %d HIT(s) can still receive work; later rounds keep polling them", r, still)
        return {"hits": hits_df, "assignments": ass_df, "answers": ans_df, "spend": spend_df, "hits_done": done_df}


class _QuestionArrays:
    """A questions table read into arrays once: what settling and the answers table take from
    each question (id, mask row, gold or not, gold label, kind), and each HIT's rows by token
    (in the table's order, as a groupby gives them)."""

    def __init__(self, q: pd.DataFrame):
        from .evidence import answer_kinds

        self.table = q
        n = len(q)
        self.qid = q["question_id"].to_numpy(dtype=object) if n else np.empty(0, dtype=object)
        self.mask_row = q["mask_row"].to_numpy(np.int64) if n else np.empty(0, np.int64)
        self.is_gold = q["is_gold"].astype(bool).to_numpy() if n else np.empty(0, bool)
        self.gold_label = (q["gold_label"].to_numpy(dtype=object) if "gold_label" in q
                           else np.full(n, None, dtype=object))
        self.kind = np.asarray([str(k) for k in answer_kinds(q)], dtype=object) if n else np.empty(0, object)
        self._rows: dict = {}
        if n and "token" in q:
            codes, tokens = pd.factorize(q["token"], sort=False)
            order = np.argsort(codes, kind="stable")
            bounds = np.cumsum(np.bincount(codes[codes >= 0], minlength=len(tokens)))
            starts = np.concatenate([[0], bounds[:-1]])
            self._rows = {t: order[a:b] for t, a, b in zip(tokens, starts, bounds)}

    def hit(self, token: str) -> _Asked:
        """The questions of the HIT with this token (none when the table has none of it)."""
        return _Asked(self, self._rows.get(token, np.empty(0, np.int64)))


class _Asked:
    """A HIT's questions as settling reads them: its golds (question id, gold label) and, as
    arrays, what each answer row takes from its question (id, mask row, gold or not, kind)."""

    __slots__ = ("n", "golds", "qids", "index", "mask_row", "is_gold", "kind", "_table", "_rows")

    def __init__(self, table: _QuestionArrays, rows: np.ndarray):
        self._table, self._rows = table, rows
        self.n = len(rows)
        self.index = table.qid[rows]
        self.qids = self.index.tolist()
        self.mask_row = table.mask_row[rows]
        self.is_gold = table.is_gold[rows]
        self.kind = table.kind[rows]
        g = np.flatnonzero(self.is_gold)
        self.golds = list(zip(self.index[g].tolist(), table.gold_label[rows[g]].tolist()))

    @classmethod
    def of(cls, q: pd.DataFrame) -> _Asked:
        """All the rows of ``q``, in its order."""
        return cls(_QuestionArrays(q), np.arange(len(q)))

    def frame(self) -> pd.DataFrame:
        """The HIT's rows of its questions table, indexed from 0."""
        t = self._table.table
        if len(self._rows) == len(t) and np.array_equal(self._rows, np.arange(len(t))):
            return t.reset_index(drop=True)
        return t.iloc[self._rows].reset_index(drop=True)


class _AnswerColumns:
    """Round ``r``'s answers table, one row per question of an assignment's HIT it answered (the
    mask the worker was shown), gathered as arrays per assignment and joined once."""

    def __init__(self, r: int):
        self.r = r
        self.parts: list[tuple] = []

    def add(self, a: Assignment, hq: _Asked, usable: bool) -> None:
        ans = a.answers
        take: slice | np.ndarray
        if len(ans) >= hq.n and all(qid in ans for qid in hq.qids):
            take = slice(None)
            labels = [bool(ans[qid]) for qid in hq.qids]
        else:
            idx = [i for i, qid in enumerate(hq.qids) if qid in ans]
            if not idx:
                return
            take = np.asarray(idx, dtype=np.int64)
            labels = [bool(ans[hq.qids[i]]) for i in idx]
        if not labels:
            return
        self.parts.append((a, hq, take, np.asarray(labels, dtype=bool).astype(np.int8), usable))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            df = pd.DataFrame([], columns=ANSWER_COLUMNS)
            df["label"] = df["label"].astype(np.int8)
            return df
        counts = np.asarray([len(p[3]) for p in self.parts], dtype=np.int64)
        n = int(counts.sum())

        def each(values: list, dtype) -> np.ndarray:
            arr = np.empty(len(values), dtype=dtype)
            arr[:] = values
            return np.repeat(arr, counts)
        return pd.DataFrame({
            "question_id": np.concatenate([p[1].index[p[2]] for p in self.parts]),
            "round": np.full(n, self.r, dtype=np.int64),
            "mask_row": np.concatenate([p[1].mask_row[p[2]] for p in self.parts]),
            "worker_id": each([p[0].worker_id for p in self.parts], object),
            "assignment_id": each([p[0].assignment_id for p in self.parts], object),
            "hit_id": each([p[0].hit_id for p in self.parts], object),
            "label": np.concatenate([p[3] for p in self.parts]),
            "is_gold": np.concatenate([p[1].is_gold[p[2]] for p in self.parts]),
            "used": each([p[4] for p in self.parts], bool),
            "kind": np.concatenate([p[1].kind[p[2]] for p in self.parts]),
        }, columns=ANSWER_COLUMNS)


def _never_sent(e: BaseException) -> bool:
    """Whether a request failed before anything was sent (no connection could be made)."""
    try:
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    return isinstance(e, (EndpointConnectionError, ConnectTimeoutError))


def assignments_frame(assignments, infos: dict[str, HitInfo]) -> pd.DataFrame:
    recs = [{"assignment_id": a.assignment_id, "hit_id": a.hit_id, "worker_id": a.worker_id,
             "answers": json.dumps(a.answers, sort_keys=True), "work_seconds": float(a.work_seconds),
             "accept_time": float(a.accept_time), "submit_time": float(a.submit_time), "flag": a.flag,
             "token": infos[a.hit_id].token if a.hit_id in infos else None, "status": a.status,
             "reward_cents": -1 if a.reward_cents is None else int(a.reward_cents)} for a in assignments]
    df = pd.DataFrame(recs)
    df["flag"] = df["flag"].astype(object)
    return df


def assignment_from_record(rec: dict) -> Assignment:
    flag = rec.get("flag")
    if isinstance(flag, float) and np.isnan(flag):
        flag = None
    reward = rec.get("reward_cents")
    reward = None if reward is None or (isinstance(reward, float) and np.isnan(reward)) or int(reward) < 0 \
        else int(reward)
    status = rec.get("status")
    return Assignment(assignment_id=rec["assignment_id"], hit_id=rec["hit_id"], worker_id=rec["worker_id"],
                      answers={k: bool(v) for k, v in json.loads(rec["answers"]).items()},
                      work_seconds=float(rec["work_seconds"]), accept_time=float(rec["accept_time"]),
                      submit_time=float(rec["submit_time"]), flag=flag,
                      status=status if isinstance(status, str) else "Submitted", reward_cents=reward)
