"""The round loop: the only code that does I/O on both the state and the crowd.

One round: plan (pure policy) -> HITs with golds -> journal the plan -> publish
(tokens journaled before each CreateHIT) -> poll until answered or timed out ->
journal every assignment received -> judge and settle (journaled before paying)
-> aggregate labels -> decide (pure policy) -> commit the round atomically.

Everything a round does is a deterministic function of the committed state and
the seed, so a round that was killed half way is simply done again: the same
tokens (no second HIT), the same answers (deduplicated by assignment id against
the journal), the same decisions.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..crowd.base import Assignment, CrowdBackend, Fees
from ..errors import BudgetExhausted
from ..hits.batching import make_hits, max_cost
from ..policy.controller import (apply_decisions, apply_split, decide, initial_status, mask_status,
                                 node_mean, plan_round, predicted_quality)
from ..schema import Decision
from .store import RunDir

log = logging.getLogger(__name__)

ASSIGNMENT_COLUMNS = ["assignment_id", "hit_id", "token", "worker_id", "round", "n_questions", "n_gold",
                      "n_gold_correct", "work_seconds", "flag", "approved", "reason", "reward_usd", "fee_usd"]
ANSWER_COLUMNS = ["question_id", "round", "mask_row", "worker_id", "assignment_id", "hit_id", "label",
                  "is_gold", "used"]
HIT_COLUMNS = ["token", "hit_id", "round", "batch", "n_questions", "assignments", "reward_usd",
               "n_submitted", "expired"]
SPEND_COLUMNS = ["round", "assignment_id", "kind", "usd"]
DECISION_COLUMNS = ["round", "node_id", "decision", "free", "n_labeled", "yes", "est_mean", "est_lo",
                    "est_hi", "quality", "size", "category_id"]


@dataclass
class CampaignState:
    status: np.ndarray
    label_p: np.ndarray
    spent_usd: float
    next_round: int
    gold_used: dict[int, int] = field(default_factory=dict)


def aggregate_labels(answers: pd.DataFrame, n: int, *, method: str = "raw",
                     golds: pd.DataFrame | None = None) -> np.ndarray:
    """Per mask row, the probability that it is correct from usable answers (NaN: none).

    ``raw``: the share of non-gold answers saying "correct". ``onecoin`` / ``ds`` /
    ``mv``: the posterior of :mod:`crowdprop.quality` estimators fitted on every
    usable answer (golds included and clamped to their known labels, so they
    teach worker skills); only masks asked as ordinary questions get a value.
    """
    out = np.full(n, np.nan)
    if answers is None or len(answers) == 0:
        return out
    usable = answers[answers["used"].astype(bool)]
    plain = usable[~usable["is_gold"].astype(bool)]
    if len(plain) == 0:
        return out
    rows = plain["mask_row"].to_numpy(np.int64)
    if method == "raw":
        cnt = np.bincount(rows, minlength=n)
        yes = np.bincount(rows, weights=plain["label"].to_numpy(np.float64), minlength=n)
        has = cnt > 0
        out[has] = yes[has] / cnt[has]
        return out
    from ..quality import make_estimator

    data = pd.DataFrame({"task": usable["mask_row"].to_numpy(np.int64), "worker": usable["worker_id"].astype(str),
                         "label": usable["label"].to_numpy(np.int64)})
    data = data.drop_duplicates(["task", "worker"], keep="last")
    gold = None
    if golds is not None and len(golds):
        gold = pd.DataFrame({"task": golds["mask_row"].to_numpy(np.int64), "label": golds["label"].to_numpy(np.int64)})
        gold = gold[gold["task"].isin(data["task"])]
    est = make_estimator(method).fit(data, gold=gold if gold is not None and len(gold) else None)
    probas = est.probas_
    asked = np.unique(rows)
    out[asked] = probas.reindex(asked).to_numpy(np.float64)
    return out


def labels_for(run: RunDir, answers: pd.DataFrame) -> np.ndarray:
    """:func:`aggregate_labels` with the run's aggregation method and gold pool."""
    from ..quality import QualitySection

    method = QualitySection.from_config(run.config).aggregation
    blocks = run.read_rounds("blocks")
    if len(blocks) and len(answers):
        # A blocked worker's answers stop counting, including those already paid for.
        answers = answers.assign(used=answers["used"].astype(bool) & ~answers["worker_id"].isin(blocks["worker_id"]))
    return aggregate_labels(answers, len(run.masks), method=method, golds=run.golds)


def replay_decisions(run: RunDir, status: np.ndarray, decisions: pd.DataFrame) -> None:
    forest = run.forest
    if len(decisions) == 0:
        return
    for _, g in decisions.groupby("round", sort=True):
        free = g["free"].to_numpy(bool)
        apply_split(forest, status, g.loc[free, "node_id"].to_numpy(np.int64))
        apply_decisions(forest, status, g.loc[~free])


def reopen_unlabeled_verified(forest, status: np.ndarray, label_p: np.ndarray) -> None:
    """A cluster verified mask by mask whose labels were withdrawn (its worker was
    blocked later) becomes a candidate again, so those masks are asked again."""
    from ..policy.controller import label_sums
    from ..schema import OPEN, VERIFIED

    ver = np.flatnonzero(status == VERIFIED)
    if len(ver) == 0:
        return
    n_lab, _ = label_sums(forest, label_p, ver)
    status[ver[n_lab < (forest.end - forest.start)[ver]]] = OPEN


def load_state(run: RunDir) -> CampaignState:
    forest = run.forest
    status = initial_status(forest)
    replay_decisions(run, status, run.read_rounds("decisions"))
    answers = run.read_rounds("answers")
    spend = run.read_rounds("spend")
    questions = run.read_rounds("questions")
    gold_used: dict[int, int] = {}
    if len(questions):
        g = questions[questions["is_gold"].astype(bool)]
        for k, v in g.groupby("mask_row").size().items():
            gold_used[int(k)] = int(v)
    rounds = run.rounds()
    label_p = labels_for(run, answers)
    reopen_unlabeled_verified(forest, status, label_p)
    return CampaignState(
        status=status,
        label_p=label_p,
        spent_usd=float(spend["usd"].sum()) if len(spend) else 0.0,
        next_round=(rounds[-1] + 1) if rounds else 1,
        gold_used=gold_used,
    )


@dataclass
class RoundPlanned:
    """What a round asks: the policy's plan, the questions table, the HITs carrying them,
    and further tables committed with the round (``extra``). ``stop``: a reason to stop
    instead (nothing to ask, or no HIT within the budget)."""
    plan: object
    questions: pd.DataFrame | None
    hits: list
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    stop: str | None = None


@dataclass
class RunResult:
    rounds_run: int
    stop_reason: str
    last_round: int


class Campaign:
    """Runs rounds of one campaign against one crowd backend.

    Parameters
    ----------
    run : RunDir
    backend : CrowdBackend
    sleep, clock : injectable for tests (defaults: time.sleep, time.monotonic)
    progress : show a progress bar (None: only on a terminal)
    """

    def __init__(self, run: RunDir, backend: CrowdBackend, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, progress: bool | None = None,
                 judge: Callable | None = None):
        self.run_dir = run
        self.backend = backend
        self.cfg = run.config
        self.sleep = sleep
        self.clock = clock
        self.progress = progress
        self.fees = Fees()
        from ..quality import QualitySection

        self.quality_cfg = QualitySection.from_config(self.cfg)
        self.judge = judge or self.judge_by_rules
        self.forest = run.forest
        masks = run.masks
        self.n = len(masks)
        self.quality = predicted_quality(masks, self.cfg.policy.quality)
        self.node_quality = node_mean(self.forest, self.quality)
        self.campaign_id = run.campaign["campaign_id"]
        blocks = run.read_rounds("blocks")
        if len(blocks) and hasattr(backend, "block"):
            for w, kind in zip(blocks["worker_id"], blocks["kind"]):
                backend.block(w, kind)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, max_rounds: int | None = None) -> RunResult:
        """Run rounds until a stop condition, holding the run directory's lock."""
        with self.run_dir.lock():
            removed = self.run_dir.clean_temporaries()
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run", removed)
            return self._run(max_rounds=max_rounds)

    def _run(self, *, max_rounds: int | None = None) -> RunResult:
        state = load_state(self.run_dir)
        limit = self.cfg.campaign.max_rounds
        done = 0
        reason = "round limit reached"
        from tqdm.auto import tqdm

        decided = int((mask_status(self.forest, state.status, state.label_p) >= 0).sum())
        bar = tqdm(total=self.n, initial=decided, unit="mask", desc="masks decided",
                   disable=(None if self.progress is None else not self.progress), leave=False)
        try:
            while state.next_round <= limit:
                if max_rounds is not None and done >= max_rounds:
                    reason = "stopped after --rounds"
                    break
                r = state.next_round
                outcome = self.run_round(r, state)
                if outcome is not None:
                    reason = outcome
                    break
                done += 1
                state = load_state(self.run_dir)
                now = int((mask_status(self.forest, state.status, state.label_p) >= 0).sum())
                bar.update(now - decided)
                decided = now
        finally:
            bar.close()
        log.info("campaign stopped: %s", reason)
        return RunResult(rounds_run=done, stop_reason=reason, last_round=state.next_round - 1)

    def run_round(self, r: int, state: CampaignState) -> str | None:
        """Run round ``r``; return a stop reason instead when there is nothing to do."""
        run = self.run_dir
        planned = self._make_plan(r, state)
        if planned.stop is not None:
            return planned.stop
        questions, kept = planned.questions, planned.hits
        run.journal_write(r, "questions", questions)

        hit_ids = self._publish(r, kept)
        assignments = self._collect(r, kept, hit_ids)
        ass_df, ans_df, spend_df = self._settle(r, kept, hit_ids, questions, assignments)

        tables = self._decide(r, state, planned, ans_df)
        hits_df = pd.DataFrame([(h.token, hit_ids[h.token], r, h.batch, len(h.questions), h.assignments, h.reward_usd,
                                 int((ass_df["token"] == h.token).sum()) if len(ass_df) else 0,
                                 bool(self._expired.get(h.token, False))) for h in kept], columns=HIT_COLUMNS)
        blocks = self._block(r, ass_df)
        run.commit_round(r, {"questions": questions, "hits": hits_df, "assignments": ass_df, "answers": ans_df,
                             "spend": spend_df, "blocks": blocks, **planned.extra, **tables})
        counts = tables["decisions"]["decision"].value_counts().to_dict()
        log.info("round %d: %d questions in %d HITs, decisions %s", r, len(questions), len(kept), counts)
        return None

    # -- policy: what a round asks and what it concludes ----------------------------------------------
    def _make_plan(self, r: int, state: CampaignState) -> RoundPlanned:
        """Plan round ``r``: the questions, the HITs carrying them (within the budget)."""
        cfg = self.cfg
        run = self.run_dir
        rng = np.random.default_rng([cfg.campaign.seed, r])
        status = state.status.copy()
        plan = plan_round(self.forest, status, self.node_quality, state.label_p, cfg.policy, rng)
        if not plan.nodes:  # free splits alone are not recorded: a later run plans them again
            return RoundPlanned(plan, None, [], stop="no candidates left")
        gold_used = dict(state.gold_used)
        questions, hits = make_hits(plan.asks, round_=r, campaign_id=self.campaign_id,
                                    campaign_name=cfg.campaign.name, cfg=cfg.crowd, gold_pool=run.golds,
                                    gold_used=gold_used, rng=rng)
        remaining = cfg.campaign.budget_usd - state.spent_usd
        kept, committed = [], 0.0
        for h in hits:
            c = max_cost(h, self.fees)
            if committed + c > remaining + 1e-9:
                break
            kept.append(h)
            committed += c
        if hits and not kept:
            return RoundPlanned(plan, None, [], stop=f"budget reached (${state.spent_usd:.2f} of "
                                                     f"${cfg.campaign.budget_usd:.2f} spent)")
        if len(kept) < len(hits):
            log.warning("round %d: budget allows %d of %d HITs", r, len(kept), len(hits))
            questions = questions[questions["token"].isin({h.token for h in kept})].reset_index(drop=True)
        return RoundPlanned(plan, questions, kept)

    def _decide(self, r: int, state: CampaignState, planned: RoundPlanned,
                ans_df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Labels with this round's answers, then the decisions: the tables the round commits."""
        cfg = self.cfg
        run = self.run_dir
        plan = planned.plan
        answers_all = pd.concat([run.read_rounds("answers"), ans_df], ignore_index=True) \
            if len(run.rounds()) else ans_df
        label_p = labels_for(run, answers_all)
        dec = decide(self.forest, np.array(plan.nodes, dtype=np.int64), label_p, cfg.policy, self.node_quality)
        free_nodes = np.array(plan.free_splits, dtype=np.int64)
        free = pd.DataFrame({"node_id": free_nodes, "decision": Decision.SPLIT.value, "n_labeled": 0, "yes": 0.0,
                             "est_mean": np.nan, "est_lo": np.nan, "est_hi": np.nan,
                             "quality": self.node_quality[free_nodes], "free": True})
        dec["free"] = False
        decisions = pd.concat([free, dec], ignore_index=True)
        nodes = decisions["node_id"].to_numpy(np.int64)
        decisions["size"] = (self.forest.end - self.forest.start)[nodes]
        decisions["category_id"] = self.forest.category[nodes]
        decisions["round"] = r
        decisions = decisions[DECISION_COLUMNS]
        return {"decisions": decisions}

    # -- steps --------------------------------------------------------------------------------------
    def _publish(self, r: int, hits) -> dict[str, str]:
        run = self.run_dir
        known = {x["token"]: x["hit_id"] for x in run.journal_lines(r, "published") if "hit_id" in x}
        out = {}
        for h in hits:
            if h.token not in known:
                run.journal_append(r, "published", {"token": h.token, "event": "create"})
            hit_id = self.backend.publish(h)  # idempotent on the token
            if known.get(h.token) not in (None, hit_id):
                raise RuntimeError(f"backend returned HIT {hit_id} for token {h.token}, journal says {known[h.token]}")
            if h.token not in known:
                run.journal_append(r, "published", {"token": h.token, "hit_id": hit_id})
            out[h.token] = hit_id
        return out

    def _collect(self, r: int, hits, hit_ids: dict[str, str]) -> list[Assignment]:
        run = self.run_dir
        prev = run.journal_read(r, "received")
        received: dict[str, Assignment] = {}
        if prev is not None:
            for rec in prev.to_dict("records"):
                received[rec["assignment_id"]] = _assignment_from_record(rec)
        expected = {hit_ids[h.token]: h.assignments for h in hits}
        token_of = {v: k for k, v in hit_ids.items()}
        deadline = self.clock() + self.cfg.crowd.round_timeout_s
        self._expired: dict[str, bool] = {}
        while True:
            new = [a for a in self.backend.poll(list(expected)) if a.assignment_id not in received]
            if new:
                for a in new:
                    received[a.assignment_id] = a
                # Recorded before anything is done with them.
                run.journal_write(r, "received", _assignments_frame(received.values(), token_of))
            per_hit: dict[str, int] = {}
            for a in received.values():
                per_hit[a.hit_id] = per_hit.get(a.hit_id, 0) + 1
            if all(per_hit.get(h, 0) >= n for h, n in expected.items()):
                break
            if self.clock() >= deadline:
                for h, n in expected.items():
                    if per_hit.get(h, 0) < n:
                        self.backend.expire(h)
                        self._expired[token_of[h]] = True
                log.warning("round %d: timed out; %d HITs expired, their questions will be asked again",
                            r, len(self._expired))
                break
            self.sleep(self.cfg.crowd.poll_interval_s)
        return sorted(received.values(), key=lambda a: a.assignment_id)

    def judge_by_rules(self, a: Assignment, n_gold: int, n_gold_correct: int, n_questions: int, cfg):
        """Reject malformed work, work failing its golds, and work done too fast."""
        from ..quality import judge_assignment

        if a.flag is not None:
            return False, f"malformed submission: {a.flag}", "Your submission could not be read; sorry."
        v = judge_assignment(n_gold, n_gold_correct, float(a.work_seconds), n_questions, self.quality_cfg)
        return bool(v.approve), v.reason, v.feedback

    def _block(self, r: int, ass_df: pd.DataFrame) -> pd.DataFrame:
        """Soft-block (or hard-block) workers with too many rejected assignments."""
        from ..quality import workers_to_block

        prev = self.run_dir.read_rounds("assignments")
        hist = pd.concat([prev, ass_df], ignore_index=True) if len(prev) else ass_df
        blocks = self.run_dir.read_rounds("blocks")
        already = set(blocks["worker_id"]) if len(blocks) else set()
        if len(hist) == 0:
            return pd.DataFrame({"worker_id": pd.Series(dtype=str), "round": pd.Series(dtype=np.int64),
                                 "kind": pd.Series(dtype=str)})
        hist = hist.rename(columns={"worker_id": "worker"})[["worker", "approved", "n_gold", "n_gold_correct"]]
        hist = hist.astype({"approved": bool, "n_gold": np.int64, "n_gold_correct": np.int64})
        soft, hard = workers_to_block(hist, self.quality_cfg)
        rows = [(w, r, "qualification") for w in sorted(set(getattr(self.backend, "failed_qualification", ()))
                                                        - already)]
        already |= {w for w, _, _ in rows}
        rows += [(w, r, "soft") for w in sorted(soft - already)] + [(w, r, "hard") for w in sorted(hard - already)]
        for w, _, kind in rows:
            if hasattr(self.backend, "block"):
                self.backend.block(w, kind)
        return pd.DataFrame(rows, columns=["worker_id", "round", "kind"])

    def _settle(self, r: int, hits, hit_ids, questions: pd.DataFrame, assignments: list[Assignment]):
        run = self.run_dir
        token_of = {v: k for k, v in hit_ids.items()}
        q_by_token = {t: g for t, g in questions.groupby("token")}
        settled = {x["assignment_id"]: x for x in run.journal_lines(r, "settled")}
        reward_of = {h.token: h.reward_usd for h in hits}
        n_asg = {h.token: h.assignments for h in hits}
        ass_rows, ans_rows, spend_rows = [], [], []
        for a in assignments:
            token = token_of.get(a.hit_id)
            q = q_by_token.get(token)
            if q is None:
                continue
            gold = q[q["is_gold"]]
            n_gold = len(gold)
            n_gold_ok = 0
            if a.flag is None:
                for qid, lab in zip(gold["question_id"], gold["gold_label"]):
                    if qid in a.answers and bool(a.answers[qid]) == bool(lab):
                        n_gold_ok += 1
            if a.assignment_id in settled:
                approve = bool(settled[a.assignment_id]["approve"])
                reason = settled[a.assignment_id].get("reason")
            else:
                approve, reason, feedback = self.judge(a, n_gold, n_gold_ok, len(q), self.cfg)
                reward = reward_of[token]
                fee = self.fees.assignment_fee(reward, n_asg[token]) if approve else 0.0
                run.journal_append(r, "settled", {"assignment_id": a.assignment_id, "approve": approve,
                                                  "reason": reason, "feedback": feedback,
                                                  "reward_usd": reward if approve else 0.0, "fee_usd": fee})
                settled[a.assignment_id] = {"approve": approve}
            self.backend.settle(a.assignment_id, approve, None if approve else (reason or "rejected"))
            reward = reward_of[token] if approve else 0.0
            fee = self.fees.assignment_fee(reward_of[token], n_asg[token]) if approve else 0.0
            ass_rows.append((a.assignment_id, a.hit_id, token, a.worker_id, r, len(q), n_gold, n_gold_ok,
                             float(a.work_seconds), a.flag, approve, reason, reward, fee))
            if approve:
                spend_rows.append((r, a.assignment_id, "reward", reward))
                spend_rows.append((r, a.assignment_id, "fee", fee))
            usable = approve and a.flag is None
            for qid, mrow, is_gold in zip(q["question_id"], q["mask_row"], q["is_gold"]):
                if qid in a.answers:
                    ans_rows.append((qid, r, int(mrow), a.worker_id, a.assignment_id, a.hit_id,
                                     int(bool(a.answers[qid])), bool(is_gold), usable))
        ass_df = pd.DataFrame(ass_rows, columns=ASSIGNMENT_COLUMNS)
        ass_df["flag"] = ass_df["flag"].astype(object)
        ass_df["reason"] = ass_df["reason"].astype(object)
        ans_df = pd.DataFrame(ans_rows, columns=ANSWER_COLUMNS)
        ans_df["label"] = ans_df["label"].astype(np.int8)
        spend_df = pd.DataFrame(spend_rows, columns=SPEND_COLUMNS)
        spend_df["usd"] = spend_df["usd"].astype(np.float64)
        return ass_df, ans_df, spend_df


def _assignments_frame(assignments, token_of) -> pd.DataFrame:
    import json

    recs = [{"assignment_id": a.assignment_id, "hit_id": a.hit_id, "worker_id": a.worker_id,
             "answers": json.dumps(a.answers, sort_keys=True), "work_seconds": float(a.work_seconds),
             "accept_time": float(a.accept_time), "submit_time": float(a.submit_time), "flag": a.flag,
             "token": token_of.get(a.hit_id)} for a in assignments]
    df = pd.DataFrame(recs)
    df["flag"] = df["flag"].astype(object)
    return df


def _assignment_from_record(rec: dict) -> Assignment:
    import json

    flag = rec.get("flag")
    if isinstance(flag, float) and np.isnan(flag):
        flag = None
    return Assignment(assignment_id=rec["assignment_id"], hit_id=rec["hit_id"], worker_id=rec["worker_id"],
                      answers={k: bool(v) for k, v in json.loads(rec["answers"]).items()},
                      work_seconds=float(rec["work_seconds"]), accept_time=float(rec["accept_time"]),
                      submit_time=float(rec["submit_time"]), flag=flag)


__all__ = ["Campaign", "CampaignState", "load_state", "aggregate_labels", "BudgetExhausted"]
