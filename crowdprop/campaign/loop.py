"""The round loop: the only code that does I/O on both the state and the crowd.

One round: plan (pure policy) -> HITs with golds -> freeze the plan in the
journal -> publish (tokens journaled before each CreateHIT) -> poll this round's
HITs and every earlier HIT that can still receive work until answered or timed
out -> journal every assignment received -> judge and settle (journaled before
paying) -> aggregate labels -> decide (pure policy) -> commit the round atomically.

A round that was killed half way is finished from its journal: the frozen plan
(the same HITs and tokens, whatever changed in the configuration since), the
same answers (deduplicated by assignment id against the journal and the
committed rounds), the same decisions. See :mod:`.crowdwork` for the crowd's side.
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
from ..hits.batching import make_hits
from ..policy.controller import (apply_decisions, apply_split, decide, initial_status, mask_status,
                                 node_mean, plan_round, predicted_quality)
from ..schema import Decision
from . import ledger
from . import roundplan as rp
from .crowdwork import ASSIGNMENT_COLUMNS, HIT_COLUMNS, HITS_DONE_COLUMNS, SPEND_COLUMNS, CrowdWork  # noqa: F401
from .roundplan import RoundPlanned
from .store import ROUND_TABLES, RunDir

log = logging.getLogger(__name__)

ANSWER_COLUMNS = ["question_id", "round", "mask_row", "worker_id", "assignment_id", "hit_id", "label",
                  "is_gold", "used", "kind"]
DECISION_COLUMNS = ["round", "node_id", "decision", "free", "n_labeled", "yes", "est_mean", "est_lo",
                    "est_hi", "quality", "size", "category_id"]


@dataclass
class CampaignState:
    status: np.ndarray
    label_p: np.ndarray
    spent_cents: int
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
        spent_cents=ledger.spent_cents(run, spend=spend),
        next_round=(rounds[-1] + 1) if rounds else 1,
        gold_used=gold_used,
    )


@dataclass
class RunResult:
    rounds_run: int
    stop_reason: str
    last_round: int


class Campaign(CrowdWork):
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
            rounds = self.run_dir.rounds()
            note = self.run_dir.claim_home((rounds[-1] + 1) if rounds else 1)
            if note:
                log.warning("%s", note)
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
            while True:
                if max_rounds is not None and done >= max_rounds:
                    reason = "stopped after --rounds"
                    break
                r = state.next_round
                past = r > limit  # past the round limit only to wait for work on HITs already out
                if past and not (rp.frozen(self.run_dir, r) or self._open_hits(r)):
                    break
                outcome = self.run_round(r, state, settle_only=past)
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
        still = len(self._open_hits(state.next_round))
        if still:
            log.warning("%d HIT(s) can still receive work: run again to record, judge and pay it (MTurk approves "
                        "submitted work on its own after [mturk] auto_approval_delay_s)", still)
        log.info("campaign stopped: %s", reason)
        return RunResult(rounds_run=done, stop_reason=reason, last_round=state.next_round - 1)

    def run_round(self, r: int, state: CampaignState, *, settle_only: bool = False) -> str | None:
        """Run round ``r`` (or finish it from its journal); return a stop reason instead when
        there is nothing to do. ``settle_only``: ask nothing, only wait for work on HITs of
        earlier rounds."""
        run = self.run_dir
        planned = self._round_plan(r, state, settle_only=settle_only)
        if planned.stop is not None:
            return planned.stop
        books = self._crowd_round(r, planned)
        if planned.settle_only and len(books["assignments"]) == 0 and len(books["hits_done"]) == 0:
            n = len(self._open_hits(r))  # nothing arrived, nothing closed: keep the journal, come back later
            return f"waiting for work on {n} HIT(s) of earlier rounds; run again later to record it"
        if planned.settle_only:
            tables = {}
        else:
            tables = self._decide(r, state, planned, books["answers"])
        blocks = self._block(r, books["assignments"])
        out = {"questions": planned.questions, **books, "blocks": blocks, **planned.extra, **tables}
        for name in ROUND_TABLES:  # a settle-only round decides nothing
            if name not in out:
                out[name] = run.empty_like_last(name)
        run.commit_round(r, out)
        counts = out["decisions"]["decision"].value_counts().to_dict() if len(out["decisions"]) else {}
        log.info("round %d: %d questions in %d HITs, decisions %s", r, len(planned.questions), len(books["hits"]),
                 counts)
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
        return RoundPlanned(plan, questions, hits)

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
        if "judged_ok" in hist:  # the rules' verdict (MTurk may have approved and paid work they reject)
            hist = hist.assign(approved=hist["judged_ok"].fillna(hist["approved"]))
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


__all__ = ["Campaign", "CampaignState", "load_state", "aggregate_labels", "BudgetExhausted"]
