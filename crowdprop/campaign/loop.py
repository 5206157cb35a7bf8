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
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..crowd.base import Assignment, BlockKind, CrowdBackend, Fees
from ..errors import BudgetExhausted
from ..hits.batching import make_hits
from ..policy.controller import (apply_decisions, apply_split, decide, initial_status, mask_labels, mask_status,
                                 node_mean, plan_round, predicted_quality)
from ..schema import KIND_NODE, NODE_ACCEPTED, NODE_OPEN, Decision, QuestionKind
from .evidence import CONTROL_COLUMNS, VERDICT_COLUMNS, answer_kinds, share_per_row
from . import ledger
from .crowdwork import ANSWER_COLUMNS, ASSIGNMENT_COLUMNS, HIT_COLUMNS, HITS_DONE_COLUMNS, SPEND_COLUMNS, CrowdWork  # noqa: F401
from . import roundplan as rp
from .roundplan import RoundPlanned
from .store import ROUND_TABLES, RunDir

log = logging.getLogger(__name__)

DECISION_COLUMNS = ["round", "node_id", "decision", "free", "n_labeled", "yes", "est_mean", "est_lo",
                    "est_hi", "quality", "size", "category_id"]


def news_of(notes: list[str], previous: str) -> list[bool]:
    """Per control note of a round, whether it tells the log something new against the previous
    round's notes (``previous``, joined with "; "): a class still short of the target with
    nothing left to re-open says the same thing round after round, and is logged at DEBUG after
    the first time (the controls table keeps every note)."""
    out = []
    for note in notes:
        m = re.match(r"class (\d+) audited .* (\d+) accepted clusters re-opened$", note)
        repeat = m is not None and m.group(2) == "0" and any(
            p.startswith(f"class {m.group(1)} audited ") for p in previous.split("; "))
        out.append(not repeat)
    return out


@dataclass
class CampaignState:
    """What the committed round tables say, derived once per round (:func:`load_state`)."""

    status: np.ndarray
    label_p: np.ndarray
    spent_cents: int
    next_round: int
    gold_used: dict[int, int]
    cluster_p: np.ndarray
    """Labels that estimate clusters (cluster samples and random questions; see campaign.evidence)."""
    yes_p: np.ndarray
    """Share of yes over every non-gold answer, audits included (the verifier's training labels)."""
    verdict: np.ndarray
    verdict_p: np.ndarray
    final: np.ndarray
    source: np.ndarray
    decided_round: np.ndarray
    noise: tuple[float, float, float, float]
    """Beta parameters of the crowd's sensitivity and specificity on golds."""
    answers: pd.DataFrame
    decisions: pd.DataFrame
    audits: pd.DataFrame
    controls: dict = field(default_factory=dict)
    last_questions: int = 0
    """Ordinary (non-gold, non-audit) questions of the last committed round: sizes its audits."""


def aggregate_labels(answers: pd.DataFrame, n: int, *, method: str = "raw",
                     golds: pd.DataFrame | None = None) -> np.ndarray:
    """Per mask row, the probability that it is correct from usable answers (NaN: none).

    Audit answers measure a decision source and never label their mask: they are left out.
    ``raw``: the share of non-gold answers saying "correct". ``onecoin`` / ``ds`` /
    ``mv``: the posterior of :mod:`crowdprop.quality` estimators fitted on every
    usable answer (golds included and clamped to their known labels, so they
    teach worker skills); only masks asked as ordinary questions get a value.
    """
    out = np.full(n, np.nan)
    if answers is None or len(answers) == 0:
        return out
    usable = answers[answers["used"].astype(bool) & (answer_kinds(answers) != QuestionKind.AUDIT.value)]
    plain = usable[~usable["is_gold"].astype(bool)]
    if len(plain) == 0:
        return out
    if method == "raw":
        return share_per_row(plain["mask_row"].to_numpy(np.int64), plain["label"].to_numpy(np.float64), n)
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
    asked = np.unique(plain["mask_row"].to_numpy(np.int64))
    out[asked] = probas.reindex(asked).to_numpy(np.float64)
    return out


def labels_for(run: RunDir, answers: pd.DataFrame) -> np.ndarray:
    """:func:`aggregate_labels` with the run's aggregation method and gold pool."""
    method = run.config.quality.aggregation
    blocks = run.read_rounds("blocks")
    if len(blocks) and len(answers):
        # A blocked worker's answers stop counting, including those already paid for.
        answers = answers.assign(used=answers["used"].astype(bool) & ~answers["worker_id"].isin(blocks["worker_id"]))
    return aggregate_labels(answers, run.n_masks, method=method, golds=run.golds)


def replay_decisions(run: RunDir, status: np.ndarray, decisions: pd.DataFrame) -> None:
    replay_decisions_on(run.forest, status, decisions)


def replay_decisions_on(forest, status: np.ndarray, decisions: pd.DataFrame) -> None:
    """Move node statuses through the recorded decisions, round by round (in place)."""
    if len(decisions) == 0:
        return
    for _, g in decisions.groupby("round", sort=True):
        free = g["free"].to_numpy(bool)
        apply_split(forest, status, g.loc[free, "node_id"].to_numpy(np.int64))
        apply_decisions(forest, status, g.loc[~free])


SMALL_POOL = 50
"""Target policy: an active pool of at most this many masks is asked whole."""
CLASS_MIN_AUDITS = 10
"""Controlling audits of a class's, or a source's, accepted masks before the controller acts on
that class's or source's estimate."""
NO_CANDIDATES = "no candidates left"
"""Stop reason of a campaign whose tree has nothing left worth asking about (recorded in campaign.json)."""
NO_PROGRESS = "no progress: a round would ask nothing and decide nothing"
"""Stop reason of a campaign whose next round would ask no question, split nothing for free,
settle no mask and only wait: the round after it would be the same (recorded in campaign.json)."""
DIMINISHING = "diminishing returns: the last rounds each decided under [campaign] stop_below_share of the masks"
"""Stop reason of a campaign whose last ``stop_patience`` rounds with answers each decided fewer than
``stop_below_share`` of the masks (:func:`diminishing_returns`; recorded in campaign.json)."""
STOP_REASONS = (NO_CANDIDATES, NO_PROGRESS, DIMINISHING)
"""Stop reasons that end a campaign with masks still open (``status`` calls it finished)."""


def diminishing_returns(decided_round: np.ndarray, final: np.ndarray, answers: pd.DataFrame | None, *,
                        share: float, patience: int) -> bool:
    """Whether the last ``patience`` committed rounds that got usable non-gold answers (the
    rounds of ``answers``, the committed answers table) each decided fewer than ``share`` of the
    masks (a mask counts in the round of its current decision). A round that got no usable answer
    (its HITs expired, or all its work was rejected) neither counts nor breaks the run: it says
    nothing about what asking yields."""
    if share <= 0 or answers is None or len(answers) == 0:
        return False
    kinds = answer_kinds(answers)
    got = answers.loc[answers["used"].astype(bool).to_numpy() & (kinds != QuestionKind.GOLD.value), "round"]
    recent = np.unique(got.to_numpy(np.int64))[-patience:]
    if len(recent) < patience:
        return False
    done = np.asarray(decided_round)[np.asarray(final) >= 0].astype(np.int64)
    per = np.bincount(done, minlength=int(recent[-1]) + 1)
    return bool((per[recent] < share * len(final)).all())


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, "float64")) for c in columns})


_DTYPES = {"round": "int64", "mask_row": "int64", "verdict": "int8", "p": "float64", "verifier_threshold": "float64",
           "risk_tolerance": "float64", "verifier_fitted": "bool", "verifier_train": "int64", "note": "object"}


def reopen_unlabeled_verified(forest, status: np.ndarray, label_p: np.ndarray,
                              verdict: np.ndarray | None = None) -> None:
    """A cluster verified mask by mask whose labels were withdrawn (its worker was
    blocked later) becomes a candidate again, so those masks are asked again. A member
    settled by a verifier verdict counts as labeled."""
    from ..policy.controller import label_counts
    from ..schema import NODE_OPEN, NODE_VERIFIED

    ver = np.flatnonzero(status == NODE_VERIFIED)
    if len(ver) == 0:
        return
    settled = label_p if verdict is None else np.where(verdict >= 0, 1.0, label_p)
    n_lab = label_counts(forest, settled, ver)
    status[ver[n_lab < (forest.end - forest.start)[ver]]] = NODE_OPEN


def load_state(run: RunDir) -> CampaignState:
    from .evidence import (cluster_labels, crowd_noise, direct_rounds, node_rounds, raw_yes, verdict_arrays)

    forest = run.forest
    n = len(forest.order)
    status = initial_status(forest)
    decisions = run.read_rounds("decisions")
    replay_decisions(run, status, decisions)
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
    verdict, verdict_round, verdict_p = verdict_arrays(run.read_rounds("verdicts"), n)
    reopen_unlabeled_verified(forest, status, label_p, verdict)
    final, source, decided = mask_labels(forest, status, label_p, verdict,
                                         node_round=node_rounds(decisions, forest.n_nodes),
                                         verdict_round=verdict_round, direct_round=direct_rounds(answers, n))
    last_q = 0
    if rounds and len(questions):
        k = answer_kinds(questions)
        last_q = int(((questions["round"] == rounds[-1]).to_numpy()
                      & ~np.isin(k, [QuestionKind.GOLD.value, QuestionKind.AUDIT.value])).sum())
    controls = run.read_rounds("controls")
    return CampaignState(
        status=status,
        label_p=label_p,
        spent_cents=ledger.spent_cents(run, spend=spend),
        next_round=(rounds[-1] + 1) if rounds else 1,
        gold_used=gold_used,
        cluster_p=cluster_labels(label_p, answers),
        yes_p=raw_yes(answers, n, {QuestionKind.CLUSTER.value, QuestionKind.ACTIVE.value,
                                   QuestionKind.RANDOM.value, QuestionKind.AUDIT.value}),
        verdict=verdict, verdict_p=verdict_p, final=final, source=source, decided_round=decided,
        noise=crowd_noise(answers, run.golds),
        answers=answers, decisions=decisions, audits=run.read_rounds("audits"),
        controls=controls.iloc[-1].to_dict() if len(controls) else {},
        last_questions=last_q,
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
        self.quality_cfg = self.cfg.quality
        self.judge = judge or self.judge_by_rules
        self.forest = run.forest
        masks = run.mask_meta  # no RLE strings: a round draws no mask
        self.n = len(masks)
        self.quality = predicted_quality(masks, self.cfg.policy.quality)
        self.node_quality = node_mean(self.forest, self.quality)
        self.campaign_id = run.campaign["campaign_id"]
        blocks = run.read_rounds("blocks")
        if len(blocks):
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
        self.run_dir.write_labels(state.final, state.source, state.decided_round, wait=False)  # labels.parquet
        limit = self.cfg.campaign.max_rounds
        done = 0
        reason = "round limit reached"
        from tqdm.auto import tqdm

        decided = int((state.final >= 0).sum())
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
                    if outcome in STOP_REASONS:
                        # Recorded so that status can say the campaign is over with masks still open.
                        data = dict(self.run_dir.campaign)
                        data["stopped"] = {"reason": outcome, "after_round": r - 1}
                        self.run_dir.write_campaign(data)
                    break
                done += 1
                state = load_state(self.run_dir)
                self.run_dir.write_labels(state.final, state.source, state.decided_round, wait=False)
                now = int((state.final >= 0).sum())
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
        assert planned.questions is not None  # a round that gets here asked its questions
        counts = out["decisions"]["decision"].value_counts().to_dict() if len(out["decisions"]) else {}
        log.info("round %d: %d questions in %d HITs, decisions %s", r, len(planned.questions), len(books["hits"]),
                 counts)
        return None

    # -- policy: what a round asks and what it concludes ----------------------------------------------
    def _make_plan(self, r: int, state: CampaignState) -> RoundPlanned:
        """Plan round ``r``: the questions, the HITs carrying them (within the budget), and the
        round's policy tables (audits drawn, verifier verdicts, controls)."""
        cfg = self.cfg
        run = self.run_dir
        if cfg.campaign.stop_below_share > 0 and diminishing_returns(
                state.decided_round, state.final, state.answers,
                share=cfg.campaign.stop_below_share, patience=cfg.campaign.stop_patience):
            from ..policy.controller import RoundPlan

            return RoundPlanned(RoundPlan(), None, [], stop=DIMINISHING)
        rng = np.random.default_rng([cfg.campaign.seed, r])
        status = state.status.copy()
        extra = {"verdicts": _empty(VERDICT_COLUMNS), "controls": _empty(CONTROL_COLUMNS)}
        if cfg.policy.name == "target":
            plan, more = self._plan_target(r, state, status, rng)
            extra.update(more)
        else:
            plan = plan_round(self.forest, status, self.node_quality, state.label_p, cfg.policy, rng)
        audits = self._plan_audits(r, state)
        extra["audits"] = audits
        asks = dict(plan.asks)
        if len(audits):
            asks[KIND_NODE[QuestionKind.AUDIT]] = audits["mask_row"].to_numpy(np.int64)
        n_asked = sum(len(v) for v in asks.values())
        if not plan.nodes and n_asked == 0:  # free splits alone are not recorded: a later run plans them again
            return RoundPlanned(plan, None, [], stop=NO_CANDIDATES)
        if n_asked == 0 and not plan.free_splits and len(extra["verdicts"]) == 0 \
                and self._only_waits(r, state, RoundPlanned(plan, None, [], extra=extra)):
            return RoundPlanned(plan, None, [], stop=NO_PROGRESS)
        gold_used = dict(state.gold_used)
        questions, hits = make_hits(asks, round_=r, campaign_id=self.campaign_id,
                                    campaign_name=cfg.campaign.name, cfg=cfg.crowd, gold_pool=run.golds,
                                    gold_used=gold_used, rng=rng)
        return RoundPlanned(plan, questions, hits, extra=extra)

    def _only_waits(self, r: int, state: CampaignState, planned: RoundPlanned) -> bool:
        """Whether a round that asks nothing would only decide "wait" (then nothing changes, and
        every later round would be the same one again)."""
        answers = state.answers.iloc[:0] if len(state.answers) else _empty(ANSWER_COLUMNS)
        out = self._decide(r, state, planned, answers, quiet=True)
        if not (out["decisions"]["decision"] == Decision.WAIT.value).all() or len(out.get("verdicts", ())):
            return False
        if "controls" in out:  # the audits' controls would change the next round
            now, nxt = planned.extra["controls"].iloc[0], out["controls"].iloc[0]
            return bool(now["verifier_threshold"] == nxt["verifier_threshold"]
                        and now["risk_tolerance"] == nxt["risk_tolerance"])
        return True

    def _plan_audits(self, r: int, state: CampaignState) -> pd.DataFrame:
        """Audits of the masks decided before round ``r`` without a direct answer (every policy),
        the budget going to the strata furthest under their share (:func:`~crowdprop.policy.audit.plan_audits`)."""
        from ..policy.audit import plan_audits

        pc = self.cfg.policy
        share = pc.audit_share
        budget = int(np.ceil(share / (1.0 - share) * state.last_questions)) if share > 0 else 0
        return plan_audits(state.final, state.source, state.decided_round, round_=r, budget=budget,
                           min_per_stratum=pc.audit_min if share > 0 else 0,
                           rng=np.random.default_rng([self.cfg.campaign.seed, r, 7]), audited=state.audits)

    def _controls(self, state: CampaignState) -> tuple[float, float]:
        """The verifier's accept threshold and the risk tolerance in force (audits adjust them)."""
        pc = self.cfg.policy
        c = state.controls or {}
        thr = float(c.get("verifier_threshold", pc.target_precision + pc.verifier_margin))
        tol = float(c.get("risk_tolerance", pc.risk_tolerance))
        return thr, tol

    def _verifier(self, r: int, state: CampaignState):
        """Fit the verifier on every answer so far; P(correct) for every mask and the features, or Nones."""
        from ..policy.verifier import Verifier, training_features, verifier_features
        from .evidence import noise_means

        pc = self.cfg.policy
        if not pc.verifier:
            return None, None, 0
        train = np.flatnonzero(~np.isnan(state.yes_p))
        if len(train) < pc.verifier_min_answers:
            return None, None, len(train)
        fit_rows = train
        if len(fit_rows) > 20_000:
            fit_rows = np.sort(np.random.default_rng([self.cfg.campaign.seed, r, 11]).choice(train, 20_000,
                                                                                               replace=False))
        masks = self.run_dir.mask_meta
        X_fit = training_features(masks, self.forest, self.quality, state.yes_p, fit_rows,
                                  np.random.default_rng([self.cfg.campaign.seed, r, 12]))
        X = verifier_features(masks, self.forest, self.quality, state.yes_p, np.arange(self.n))
        v = Verifier(min_answers=pc.verifier_min_answers, random_state=int(self.cfg.campaign.seed))
        v.fit(X_fit, state.yes_p[fit_rows])
        if not v.fitted_:
            return None, None, len(train)
        sens, spec = noise_means(state.noise)
        return Verifier.correct(v.predict_yes(X), sens, spec), X, len(train)

    def _plan_target(self, r: int, state: CampaignState, status: np.ndarray, rng: np.random.Generator):
        from ..policy.target import TargetContext, decided_history, plan_target, settled_mask
        from ..policy.verifier import active_questions
        from .evidence import noise_means, own_answers, settle_after

        pc = self.cfg.policy
        thr, tol = self._controls(state)
        p, X, n_train = self._verifier(r, state)
        fitted = p is not None
        node_quality = node_mean(self.forest, p) if fitted else self.node_quality
        sens, spec = noise_means(state.noise)
        verdict = state.verdict.copy()
        verdicts = _empty(VERDICT_COLUMNS)
        if fitted and own_answers(state.answers) >= settle_after(pc.verifier_settle_after, self.n):
            # Settle masks one by one: open masks without an answer or verdict, anywhere or (scope
            # "small") in small open clusters after this round's free splits.
            if pc.verifier_scope == "all":
                # every open mask without an answer or verdict (a large cluster is then decided on
                # the members left: its sample and size count only unsettled masks)
                members = np.flatnonzero(~settled_mask(state.label_p, verdict) & (state.final < 0))
            else:
                probe = status.copy()
                plan_target(self.forest, probe, node_quality, state.label_p, state.cluster_p,
                            TargetContext(sens, spec, pd.DataFrame(), verdict, False, tol), pc,
                            np.random.default_rng(0))
                small_open = np.flatnonzero((probe == NODE_OPEN)
                                            & (((self.forest.end - self.forest.start) <= pc.min_cluster_size)
                                               | (self.forest.left < 0)))
                members = (np.concatenate([self.forest.members(int(x)) for x in small_open]) if len(small_open)
                           else np.zeros(0, dtype=np.int64))
                members = members[~settled_mask(state.label_p, verdict)[members]]
            if len(members):
                acc = members[p[members] >= thr]
                rej = members[p[members] <= pc.verifier_reject]
                verdict[acc] = 1
                verdict[rej] = 0
                rows = np.concatenate([acc, rej])
                verdicts = pd.DataFrame({"round": r, "mask_row": rows.astype(np.int64),
                                         "verdict": np.concatenate([np.ones(len(acc)), np.zeros(len(rej))]).astype(np.int8),
                                         "p": p[rows]}).sort_values("mask_row", kind="stable").reset_index(drop=True)
        ctx = TargetContext(sens, spec, decided_history(self.forest, state.decisions), verdict, fitted, tol)
        plan, pool = plan_target(self.forest, status, node_quality, state.label_p, state.cluster_p, ctx, pc, rng)
        if fitted and len(pool):
            # A pool this small is asked whole: halving it round after round only adds rounds.
            n_active = len(pool) if len(pool) <= SMALL_POOL else int(np.ceil(pc.active_share * len(pool)))
            # No more than the verifier has answers: a round's active questions grow with what it has
            # learned (round 2 of a 1M campaign would otherwise ask half of every small cluster's
            # masks on a verifier fitted on round 1's few hundred answers).
            n_active = min(n_active, max(SMALL_POOL, int(n_train)))
            idx, _ = active_questions(X[pool], p[pool], n_active, 0, rng)
            plan.asks[KIND_NODE[QuestionKind.ACTIVE]] = pool[idx]
            asked = np.concatenate([v for v in plan.asks.values() if len(v)] or [np.zeros(0, np.int64)])
            open_rows = np.flatnonzero(~settled_mask(state.label_p, verdict) & (state.final < 0))
            open_rows = np.setdiff1d(open_rows, asked)
            n_rand = int(np.ceil(pc.random_share / (1.0 - pc.random_share) * len(idx))) if pc.random_share else 0
            n_rand = min(n_rand, len(open_rows))
            if n_rand:
                plan.asks[KIND_NODE[QuestionKind.RANDOM]] = np.sort(rng.choice(open_rows, n_rand, replace=False))
        controls = pd.DataFrame([{"round": r, "verifier_threshold": thr, "risk_tolerance": tol,
                                  "verifier_fitted": fitted, "verifier_train": int(n_train), "note": ""}])
        return plan, {"verdicts": verdicts, "controls": controls}

    def _decide(self, r: int, state: CampaignState, planned: RoundPlanned,
                ans_df: pd.DataFrame, *, quiet: bool = False) -> dict[str, pd.DataFrame]:
        """Labels with this round's answers, then the decisions: the tables the round commits.
        ``quiet``: a probe (:meth:`_only_waits`), which logs nothing."""
        cfg = self.cfg
        run = self.run_dir
        plan = planned.plan
        assert plan is not None  # only a stopped round has no plan, and it decides nothing
        answers_all = pd.concat([state.answers, ans_df], ignore_index=True) \
            if len(state.answers) else ans_df
        label_p = labels_for(run, answers_all)
        nodes = np.array(plan.nodes, dtype=np.int64)
        node_quality = self.node_quality
        if cfg.policy.name == "target":
            from ..policy.target import TargetContext, class_slack, decide_target, decided_history
            from .evidence import cluster_labels, crowd_noise, noise_means, verdict_arrays

            # Everything from the committed state and the round's (journaled) plan and answers, so a
            # resumed round decides exactly as an uninterrupted one. The crowd's noise includes this
            # round's gold answers: in round 1 nothing else measures it.
            ctl = planned.extra["controls"].iloc[0]
            verdicts = pd.concat([run.read_rounds("verdicts"), planned.extra["verdicts"]], ignore_index=True)
            noise = crowd_noise(answers_all, run.golds)
            sens, spec = noise_means(noise)
            slack = class_slack(self.forest, state.status, state.final, state.source, state.decisions, state.verdict_p,
                                self.run_dir.mask_meta["category_id"].to_numpy(np.int64), cfg.policy.target_precision,
                                cfg.policy.credible)
            ctx = TargetContext(sens, spec, decided_history(self.forest, state.decisions),
                                verdict_arrays(verdicts, self.n)[0], bool(ctl["verifier_fitted"]),
                                float(ctl["risk_tolerance"]), slack)
            asked = np.isin(nodes, [k for k, v in plan.asks.items() if len(v)])
            dec = decide_target(self.forest, nodes, label_p, cluster_labels(label_p, answers_all), ctx, cfg.policy,
                                node_quality, asked)
        else:
            dec = decide(self.forest, nodes, label_p, cfg.policy, node_quality)
        free_nodes = np.array(plan.free_splits, dtype=np.int64)
        free = pd.DataFrame({"node_id": free_nodes, "decision": Decision.SPLIT.value, "n_labeled": 0, "yes": 0.0,
                             "est_mean": np.nan, "est_lo": np.nan, "est_hi": np.nan,
                             "quality": node_quality[free_nodes], "free": True})
        dec["free"] = False
        decisions = pd.concat([free, dec], ignore_index=True)
        nodes = decisions["node_id"].to_numpy(np.int64)
        decisions["size"] = (self.forest.end - self.forest.start)[nodes]
        decisions["category_id"] = self.forest.category[nodes]
        decisions["round"] = r
        decisions = decisions[DECISION_COLUMNS]
        out = {"decisions": decisions}
        if cfg.policy.name == "target":
            out.update(self._audit_controls(r, state, planned, answers_all, label_p, decisions, noise, quiet))
        return out

    def _audit_controls(self, r, state, planned, answers_all, label_p, decisions, noise,
                        quiet: bool = False) -> dict[str, pd.DataFrame]:
        """Act on audits: when a source's audited lower bound falls under the target, raise the
        verifier's threshold (withdrawing its accepts under the new one) or halve the cluster
        risk tolerance and re-open the accepted clusters that no longer pass with their audits;
        per class likewise. ``noise``: the crowd's noise with this round's golds, from _decide."""
        from ..policy.audit import (CLUSTER, VERIFIER, audit_roles, audited_precision, short_classes, short_source,
                                    valid_audits)
        from ..policy.risk import risk_decision
        from ..policy.target import decided_history
        from .evidence import direct_rounds, node_rounds, verdict_arrays

        pc = self.cfg.policy
        controls = planned.extra["controls"].copy()
        verdicts = planned.extra["verdicts"]
        status = state.status.copy()
        all_dec = pd.concat([state.decisions, decisions], ignore_index=True) if len(state.decisions) else decisions
        replay_decisions_on(self.forest, status, decisions)
        v_all = pd.concat([self.run_dir.read_rounds("verdicts"), verdicts], ignore_index=True)
        verdict, v_round, v_p = verdict_arrays(v_all, self.n)
        final, source, decided = mask_labels(self.forest, status, label_p, verdict,
                                             node_round=node_rounds(all_dec, self.forest.n_nodes),
                                             verdict_round=v_round, direct_round=direct_rounds(answers_all, self.n))
        audits = pd.concat([state.audits, planned.extra["audits"]], ignore_index=True) \
            if len(state.audits) else planned.extra["audits"]
        # Only the controlling share of the audits steers (policy.audit: roles); the rest stay an
        # unbiased sample of whatever the controls leave accepted.
        ok = audit_roles(valid_audits(audits, answers_all, final, source, decided), True)[1]
        conf = 2 * pc.target_confidence - 1.0  # a one-sided bound is the lower end of this interval
        est = audited_precision(final, source, ok, noise, credible=conf,
                                rng=np.random.default_rng([self.cfg.campaign.seed, r, 13]))
        thr = float(controls["verifier_threshold"].iloc[0])
        tol = float(controls["risk_tolerance"].iloc[0])
        notes = []
        extra_dec = []
        def short(src):
            return short_source(src, pc.target_precision, CLASS_MIN_AUDITS)

        vs = est.by_source.get("verifier")
        if vs is not None and short(vs):
            new_thr = min(thr + 0.02, 0.995)
            bad = np.flatnonzero((verdict == 1) & (v_p < new_thr) & (source == VERIFIER))
            if len(bad):
                verdicts = pd.concat([verdicts, pd.DataFrame({"round": r, "mask_row": bad.astype(np.int64),
                                                              "verdict": np.int8(-1), "p": v_p[bad]})],
                                     ignore_index=True)
            notes.append(f"verifier audited lower bound {vs['lo']:.3f} < target: threshold {thr:.3f} -> "
                         f"{new_thr:.3f}, {len(bad)} accepts withdrawn")
            thr = new_thr
        def reopen_failing(acc_nodes, tol_now):
            """Accepted clusters that no longer pass the risk rule at ``tol_now`` with the answers
            they were accepted on plus their audits: decisions rows that re-open them."""
            if not (len(acc_nodes) and len(ok)):
                return acc_nodes[:0]
            from ..policy.controller import label_sums
            from ..policy.risk import depth_band, eb_priors
            from .evidence import noise_means

            aud = ok[(ok["source"] == CLUSTER) & (ok["label"] == 1)]
            a_p = np.full(self.n, np.nan)
            a_p[aud["mask_row"].to_numpy(np.int64)] = aud["yes"].to_numpy(np.float64)
            n_c, y_c = label_sums(self.forest, a_p, acc_nodes)
            last = all_dec.drop_duplicates("node_id", keep="last").set_index("node_id")
            yes0 = last.loc[acc_nodes, "yes"].to_numpy(np.float64)
            n0 = last.loc[acc_nodes, "n_labeled"].to_numpy(np.float64)
            sens, spec = noise_means(noise)
            a0, b0 = eb_priors(decided_history(self.forest, all_dec),
                               pd.DataFrame({"category_id": self.forest.category[acc_nodes],
                                             "band": depth_band(self.forest.depth[acc_nodes])}))
            d = risk_decision(yes0 + y_c, n0 + n_c, (self.forest.end - self.forest.start)[acc_nodes], a0, b0,
                              target=pc.target_precision, reject=pc.reject, sens=sens, spec=spec, tol=tol_now,
                              k=pc.k, min_answers=pc.batch, confidence=pc.target_confidence,
                              size_cap=pc.risk_size_cap)
            bad = (d != Decision.ACCEPT.value) & (n_c > 0)
            reopen = acc_nodes[bad]
            if len(reopen):
                extra_dec.append(pd.DataFrame({
                    "round": r, "node_id": reopen, "decision": Decision.REOPEN.value, "free": False,
                    "n_labeled": n0[bad].astype(np.int64), "yes": yes0[bad], "est_mean": np.nan,
                    "est_lo": np.nan, "est_hi": np.nan, "quality": self.node_quality[reopen],
                    "size": (self.forest.end - self.forest.start)[reopen],
                    "category_id": self.forest.category[reopen]})[DECISION_COLUMNS])
            return reopen

        acc_nodes = np.flatnonzero(status == NODE_ACCEPTED)
        reopened = acc_nodes[:0]
        cs = est.by_source.get("cluster")
        if cs is not None and short(cs):
            tol = max(tol / 2.0, pc.risk_tolerance / 8.0)
            reopened = reopen_failing(acc_nodes, tol)
            notes.append(f"cluster audited lower bound {cs['lo']:.3f} < target: tolerance -> {tol:.3g}, "
                         f"{len(reopened)} accepted clusters re-opened")
        # Per class: a class whose audited precision and lower bound are both under the target
        # (with at least CLASS_MIN_AUDITS audits of its accepted masks) has its accepted clusters
        # checked again with their audits at half the tolerance; those that fail are re-opened.
        cat_of = self.run_dir.mask_meta["category_id"].to_numpy(np.int64)
        left = acc_nodes[~np.isin(acc_nodes, reopened)]
        for c, ce in short_classes(final, source, ok, noise, cat_of, np.unique(self.forest.category[left]).tolist(),
                                   target=pc.target_precision, confidence=pc.target_confidence,
                                   min_audits=CLASS_MIN_AUDITS, rng=np.random.default_rng([self.cfg.campaign.seed, r, 14])):
            back = reopen_failing(left[self.forest.category[left] == c], max(tol / 2.0, pc.risk_tolerance / 8.0))
            notes.append(f"class {c} audited {ce.mean:.3f} [{ce.lo:.3f}, {ce.hi:.3f}] < target: "
                         f"{len(back)} accepted clusters re-opened")
        news = news_of(notes, str((state.controls or {}).get("note") or ""))
        for note, is_news in zip(notes, news) if not quiet else ():
            log.log(logging.INFO if is_news else logging.DEBUG, "round %d: %s", r, note)
        nxt = controls.copy()
        nxt["verifier_threshold"] = thr
        nxt["risk_tolerance"] = tol
        nxt["note"] = "; ".join(notes)
        out = {"verdicts": verdicts.reset_index(drop=True), "controls": nxt}
        if extra_dec:
            out["decisions"] = pd.concat([decisions] + extra_dec, ignore_index=True)
        return out

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
        rows = [(w, r, BlockKind.QUALIFICATION.value) for w in sorted(set(self.backend.failed_qualification) - already)]
        already |= {w for w, _, _ in rows}
        rows += ([(w, r, BlockKind.SOFT.value) for w in sorted(soft - already)]
                 + [(w, r, BlockKind.HARD.value) for w in sorted(hard - already)])
        for w, _, kind in rows:
            self.backend.block(w, kind)
        return pd.DataFrame(rows, columns=["worker_id", "round", "kind"])


__all__ = ["Campaign", "CampaignState", "load_state", "aggregate_labels", "BudgetExhausted"]
