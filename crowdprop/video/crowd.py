"""Questions, the click model, golds, and the simulated crowd of video mode.

**Question.** One *region* highlighted in its frame: "which class is this?", the classes
listed in the order of the network's mean probability over the region (keys 1-9), or
"mixed" (key 0) when no class covers at least ``mixed_below`` of it. A region is a patch or
superpixel unit, or, for ``frame`` units, one superpixel of the frame: a frame is asked as the
batch of its superpixels.

**Click model** (every figure and report uses it): one answered region costs one click.
Labeling a whole video by hand costs one click per superpixel of every frame (a person
choosing the class of each SLIC superpixel of ``[video] superpixel_px`` pixels on average), and gives each
superpixel its majority class: that labeling's mIoU is ``miou_manual``. ``clicks_share`` is
the label clicks of approved work (golds and rejected work excluded) over that total; the gold
and rejected clicks are paid and reported separately.

**Answers.** The approved answers to a region are counted as votes ("mixed" is one); the class
that wins outright labels every pixel of the region, a tie or "mixed" labels nothing. With one
assignment per HIT that is the one answer. Human labels override the network on the pixels
they cover.

**Adaptive vote** (``[video] vote = "adaptive"``): after the first ``assignments_per_hit``
answers, a region is asked once more (of a worker who has not answered it) while its approved
answers disagree, or while its one answer comes from a worker whose gold accuracy
``(right + 1) / (golds + 2)`` is under ``vote_trust``, up to ``vote_max`` answers
(:func:`ask_again`). Every answer is a click. The simulated crowd asks just those regions again
in new HITs; on MTurk (:mod:`.hits`) the HIT holding them gets one more assignment, which MTurk
gives to a worker who has not done that HIT (its other regions get an answer more too).

**HITs and quality** are the image workflow's: ``[crowd] questions_per_hit`` questions of which
``golds_per_hit`` are golds (regions with a known answer, least used first, at random
positions), ``assignments_per_hit`` assignments by distinct workers, each judged by
:func:`crowdprop.quality.rules.judge_assignment` (gold accuracy and time per question), workers
blocked by :func:`crowdprop.quality.rules.workers_to_block` (``soft_block_after`` rejected
assignments, or a gold accuracy surely below ``block_below_accuracy``), questions of a HIT whose every
assignment was rejected asked again (up to 3 times), rewards pro rata for short HITs, MTurk's
fee from :data:`crowdprop.campaign.ledger.FEES`, every amount in integer cents and checked
against the cap before each HIT.

**Qualification test** (as for images): before their first HIT a worker answers
``[quality] qualification_size`` gold regions (:func:`qualification_golds`: drawn once from the
gold pool with the campaign seed), the same question as the HITs' but choosing among every class
and "mixed"; who gets fewer than ``qualification_pass`` of them right gets no HIT. On MTurk it
is the campaign's qualification type with a Test and an AnswerKey
(:class:`crowdprop.video.hits.VideoBackend`); in process and on a local endpoint the simulated
workers answer it with the same draws (:func:`qualification_answers`), so the same workers pass.

**Simulated workers** (replay): ``[simulation] workers``, each answering the truth with their
accuracy (normal ``accuracy`` +/- ``accuracy_spread``; ``sloppy_share`` at
``sloppy_accuracy``) and otherwise another option at random; ``spammer_share`` answer at
random and fast. Worker ``i`` draws from ``default_rng([seed, i])``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..campaign.ledger import FEES
from ..config import QualitySection
from ..money import cap_cents, cents
from ..quality.rules import judge_assignment, positions_for_golds, workers_to_block

log = logging.getLogger(__name__)

MIXED = -1
"""The answer "mixed"."""
UNKNOWN = -2
"""No known truth (a real crowd's label question)."""
MAX_ASKS = 3

ANSWER_COLUMNS = ["round", "hit", "worker", "question", "region", "frame", "kind", "answer", "truth", "approved"]
ASSIGNMENT_COLUMNS = ["round", "hit", "worker", "questions", "golds", "golds_correct", "seconds", "approved",
                      "reason", "reward_cents", "fee_cents"]


@dataclass
class Worker:
    worker: str
    kind: str
    accuracy: float
    seconds: float


def simulated_workers(sim, seed: int) -> list[Worker]:
    """The replay's crowd (see the module's docstring)."""
    rng = np.random.default_rng([seed, 7919])
    n = sim.workers
    n_spam = int(round(sim.spammer_share * n))
    n_sloppy = int(round(sim.sloppy_share * n))
    kinds = np.array(["spammer"] * n_spam + ["sloppy"] * n_sloppy + ["normal"] * (n - n_spam - n_sloppy))
    kinds = kinds[rng.permutation(n)]
    out = []
    for i, k in enumerate(kinds):
        r = np.random.default_rng([seed, i])
        if k == "normal":
            acc = float(np.clip(r.normal(sim.accuracy, sim.accuracy_spread), 0.5, 1.0))
        elif k == "sloppy":
            acc = float(sim.sloppy_accuracy)
        else:
            acc = 0.0
        sec = sim.seconds_per_question if k != "spammer" else 0.2
        out.append(Worker(f"VW{i:04d}", str(k), acc, float(sec)))
    return out


def answer(worker: Worker, truth: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A simulated worker's answers (class ids or MIXED) to questions whose careful answers are ``truth``."""
    options = np.arange(-1, n_classes)  # MIXED and every class
    rand = rng.choice(options, size=len(truth))
    if worker.kind == "spammer":
        return rand
    right = rng.random(len(truth)) < worker.accuracy
    # a wrong answer is another option, uniformly
    other = rng.integers(0, len(options) - 1, size=len(truth))
    wrong = np.array([options[options != t][o] for t, o in zip(truth, other)], np.int64) if len(truth) else rand
    return np.where(right, truth, wrong).astype(np.int64)


# ------------------------------------------------------------------------------ qualification test
QUALIFICATION_DRAW = 0x7175616C
"""Stream of a simulated worker's test answers: ``default_rng([seed, worker index, QUALIFICATION_DRAW])``."""


def qualification_question(region: int) -> str:
    """QuestionIdentifier of the test question on gold region ``region``."""
    return f"region-{int(region)}"


def qualification_selection(truth: int) -> str:
    """The SelectionIdentifier of an answer in the qualification test (a class id, or ``mixed``)."""
    return "mixed" if int(truth) == MIXED else str(int(truth))


def qualification_golds(golds: pd.DataFrame, quality: QualitySection, seed: int) -> pd.DataFrame:
    """The golds of the campaign's qualification test, in test order: ``[quality] qualification_size``
    regions of the gold pool (all of them when it is smaller), drawn once with a generator seeded by
    the campaign seed (the pool in region order, so every process draws the same); empty when
    the test is off or the pool is empty. Columns ``region, frame, truth``."""
    cols = ["region", "frame", "truth"]
    if quality.qualification_size <= 0 or not len(golds):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    pool = golds.sort_values("region", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng([seed, QUALIFICATION_DRAW])
    take = np.sort(rng.choice(len(pool), min(quality.qualification_size, len(pool)), replace=False))
    return pool.loc[take, cols].astype("int64").reset_index(drop=True)


def qualification_answers(worker: Worker, index: int, truth: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """A simulated worker's answers to the qualification test (careful answers ``truth``): the same
    draws in process and on a local endpoint (:class:`crowdprop.video.localcrowd.EndpointWorkers`)."""
    return answer(worker, np.asarray(truth, np.int64), n_classes,
                  np.random.default_rng([seed, int(index), QUALIFICATION_DRAW]))


def qualification_results(test: pd.DataFrame, workers: list[Worker], n_classes: int,
                          seed: int) -> dict[str, tuple[int, int]]:
    """Worker -> (questions, answered right) of the qualification test ``test``
    (:func:`qualification_golds`); empty when there is no test."""
    if not len(test):
        return {}
    truth = test["truth"].to_numpy(np.int64)
    return {w.worker: (len(truth), int((qualification_answers(w, i, truth, n_classes, seed) == truth).sum()))
            for i, w in enumerate(workers)}


def qualified_workers(golds: pd.DataFrame, workers: list[Worker], cfg, n_classes: int) -> list[Worker]:
    """The workers who pass the qualification test (:func:`crowdprop.quality.rules.passes_qualification`
    at ``[quality] qualification_pass``); everyone when there is no test."""
    from ..quality.rules import passes_qualification

    test = qualification_golds(golds, cfg.quality, cfg.campaign.seed)
    res = qualification_results(test, workers, n_classes, cfg.campaign.seed)
    return [w for w in workers if w.worker not in res or passes_qualification(*res[w.worker], cfg.quality)]


def hit_reward_cents(n_questions: int, crowd) -> int:
    """A full HIT pays ``reward_usd``; a short one pro rata, at least a cent."""
    full = cents(crowd.reward_usd)
    return max(1, (full * n_questions + crowd.questions_per_hit // 2) // crowd.questions_per_hit)


def blocked_workers(assignments: pd.DataFrame | None, quality: QualitySection) -> set[str]:
    """Workers the image workflow's rules block (:func:`crowdprop.quality.rules.workers_to_block`:
    ``soft_block_after`` rejected assignments, or a gold accuracy surely below
    ``block_below_accuracy``), from assignments with columns ``worker, approved, golds,
    golds_correct``; soft and hard blocks alike (:func:`block_kinds` tells them apart)."""
    soft, hard = block_kinds(assignments, quality)
    return soft | hard


def block_kinds(assignments: pd.DataFrame | None, quality: QualitySection) -> tuple[set[str], set[str]]:
    """``(soft, hard)`` blocked workers (``[quality] hard_block`` decides which set is filled)."""
    if assignments is None or not len(assignments):
        return set(), set()
    hist = pd.DataFrame({"worker": assignments["worker"].astype(str).to_numpy(),
                         "approved": assignments["approved"].astype(bool).to_numpy(),
                         "n_gold": assignments["golds"].astype(np.int64).to_numpy(),
                         "n_gold_correct": assignments["golds_correct"].astype(np.int64).to_numpy()})
    soft, hard = workers_to_block(hist, quality)
    return {str(w) for w in soft}, {str(w) for w in hard}


@dataclass
class HitSlots:
    """The questions of one HIT in the order shown: label questions with golds at random positions."""

    kind: np.ndarray
    """``label`` or ``gold`` per slot."""
    region: np.ndarray
    frame: np.ndarray
    truth: np.ndarray
    question: np.ndarray
    """Row of the round's plan (``question`` column) of a label slot; -1 for a gold."""

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def n_gold(self) -> int:
        return int((self.kind == "gold").sum())


def assemble_hit(questions: pd.DataFrame, golds: pd.DataFrame, n_gold: int, rng: np.random.Generator) -> HitSlots:
    """One HIT of ``questions`` (columns ``question, region, frame, truth``) and ``n_gold`` golds of
    the pool (least used first, ties at random; ``used`` is incremented in place) at positions
    drawn uniformly (:func:`crowdprop.quality.rules.positions_for_golds`)."""
    n_q = len(questions) + n_gold
    gsel = golds.index[np.lexsort((rng.random(len(golds)), golds["used"].to_numpy()))[:n_gold]]
    golds.loc[gsel, "used"] += 1
    pos = positions_for_golds(n_q, n_gold, rng)
    kind = np.array(["label"] * n_q, object)
    kind[pos] = "gold"
    region = np.zeros(n_q, np.int64)
    frame = np.zeros(n_q, np.int64)
    truth = np.zeros(n_q, np.int64)
    qid = np.full(n_q, -1, np.int64)
    lab = np.flatnonzero(kind == "label")
    region[lab], frame[lab] = questions["region"].to_numpy(), questions["frame"].to_numpy()
    truth[lab], qid[lab] = questions["truth"].to_numpy(), questions["question"].to_numpy()
    if n_gold:
        g = golds.loc[gsel]
        region[pos], frame[pos], truth[pos] = g["region"].to_numpy(), g["frame"].to_numpy(), g["truth"].to_numpy()
    return HitSlots(kind.astype(str), region, frame, truth, qid)


def worker_accuracy(assignments: pd.DataFrame) -> pd.Series:
    """Gold accuracy per worker, ``(right + 1) / (golds + 2)`` over every gold they answered."""
    if not len(assignments):
        return pd.Series(dtype=np.float64)
    g = assignments.groupby(assignments["worker"].astype(str))[["golds", "golds_correct"]].sum()
    return (g["golds_correct"].astype(np.float64) + 1) / (g["golds"].astype(np.float64) + 2)


def ask_again(questions: pd.DataFrame, answers: pd.DataFrame, assignments: pd.DataFrame,
              video) -> tuple[list[int], dict[int, set[str]]]:
    """The adaptive vote (``[video] vote = "adaptive"``): positions in ``questions`` to ask once more,
    and who answered each (they are not asked it again). A question with approved answers and fewer
    than ``vote_max`` of them is asked again when they disagree, or when its one answer comes from
    a worker whose gold accuracy (:func:`worker_accuracy`) is under ``vote_trust``."""
    lab = answers.loc[answers["kind"] == "label"]
    pos = pd.Series(np.arange(len(questions)), index=questions["question"].to_numpy(np.int64))
    ok = lab.loc[lab["approved"].astype(bool)].drop_duplicates(["question", "worker"])  # a worker votes once
    per = ok.groupby("question").agg(n=("answer", "size"), distinct=("answer", "nunique"),
                                     worker=("worker", "first"))
    acc = worker_accuracy(assignments)
    lone = (per["n"] == 1) & (per["worker"].map(acc).fillna(0.5) < video.vote_trust)
    need = per.index[(per["n"] < video.vote_max) & ((per["distinct"] > 1) | lone)]
    who = lab.groupby("question")["worker"].agg(lambda w: set(map(str, w)))
    again = sorted(int(pos[q]) for q in need)
    return again, {int(pos[q]): who[q] for q in need}


def run_questions(questions: pd.DataFrame, golds: pd.DataFrame, workers: list[Worker], cfg, *, round_: int,
                  rng: np.random.Generator, spent_cents: int, history: pd.DataFrame | None,
                  n_classes: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Ask ``questions`` (columns ``question, region, frame, truth``) through simulated HITs.

    ``golds``: the gold pool (``region, frame, truth``, and ``used``, updated in place); workers who
    fail the qualification test on it (:func:`qualified_workers`) get no HIT.
    Returns (answers, assignments, cents spent this round). Stops when the next HIT could pass
    the budget cap (what was not asked stays unasked)."""
    crowd, quality = cfg.crowd, cfg.quality
    cap = cap_cents(cfg.campaign.budget_usd)
    blocked = blocked_workers(history, quality)
    per_hit = crowd.questions_per_hit - crowd.golds_per_hit
    answers: list[pd.DataFrame] = []
    assigns: list[dict] = []
    spent = 0
    hit = 0
    hist = history if history is not None else pd.DataFrame(columns=ASSIGNMENT_COLUMNS)
    passed = qualified_workers(golds, workers, cfg, n_classes)
    if len(passed) < len(workers):
        log.info("round %d: %d of %d simulated workers failed the qualification test", round_,
                 len(workers) - len(passed), len(workers))
    workers = passed

    def ask(queue: list[int], n_assign: int, exclude: dict[int, set[str]] | None) -> bool:
        """Ask the questions at positions ``queue`` in HITs of ``n_assign`` assignments; with
        ``exclude``, a HIT goes to workers who answered none of its questions. False when it
        stopped early (budget, or nobody left to ask)."""
        nonlocal blocked, spent, hit
        asks = np.zeros(len(questions), np.int64)
        while queue:
            live = [w for w in workers if w.worker not in blocked]
            if not live:
                log.warning("round %d: every simulated worker is blocked; %d questions unasked", round_, len(queue))
                return False
            if exclude is None:
                take, queue = queue[:per_hit], queue[per_hit:]
            else:  # as many as leave a worker who answered none of them
                take, rest, out = [], [], set[str]()
                for i in queue:
                    if len(take) < per_hit and sum(w.worker not in out | exclude[i] for w in live) >= n_assign:
                        take.append(i)
                        out |= exclude[i]
                    else:
                        rest.append(i)
                if not take:
                    log.info("round %d: no worker left who has not answered %d question(s); not asked again",
                             round_, len(queue))
                    return True
                queue = rest
                live = [w for w in live if w.worker not in out]
            n_gold = min(crowd.golds_per_hit, len(golds))
            n_q = len(take) + n_gold
            reward = hit_reward_cents(n_q, crowd)
            fee = FEES.assignment_fee_cents(reward, n_assign)
            if spent_cents + spent + reward + fee > cap:
                log.info("round %d: budget cap reached; %d questions unasked", round_, len(take) + len(queue))
                return False
            hit += 1
            s = assemble_hit(questions.iloc[take], golds, n_gold, rng)
            kind, region, frame, truth, qid = s.kind, s.region, s.frame, s.truth, s.question
            n_asg = min(n_assign, len(live))
            who = rng.choice(len(live), size=n_asg, replace=False)  # distinct workers per HIT
            any_paid = False
            for wi in who:
                w = live[int(wi)]
                if any_paid or wi != who[0]:  # each further assignment is checked against the cap too
                    if spent_cents + spent + reward + fee > cap:
                        break
                got = answer(w, truth, n_classes, rng)
                seconds = float(n_q * w.seconds * rng.lognormal(0, 0.2))
                ok_gold = int(((got == truth) & (kind == "gold")).sum())
                verdict = judge_assignment(n_gold, ok_gold, seconds, n_q, quality)
                paid = verdict.approve
                any_paid |= paid
                spent += (reward + fee) if paid else 0
                assigns.append({"round": round_, "hit": hit, "worker": w.worker, "questions": n_q, "golds": n_gold,
                                "golds_correct": ok_gold, "seconds": seconds, "approved": paid,
                                "reason": verdict.reason or "", "reward_cents": reward if paid else 0,
                                "fee_cents": fee if paid else 0})
                answers.append(pd.DataFrame({"round": round_, "hit": hit, "worker": w.worker, "question": qid,
                                             "region": region, "frame": frame, "kind": kind, "answer": got,
                                             "truth": np.where(kind == "gold", truth, UNKNOWN), "approved": paid}))
            if not any_paid:
                asks[take] += 1
                queue += [i for i in take if asks[i] < MAX_ASKS]
            blocked = blocked_workers(pd.concat([hist, pd.DataFrame(assigns)], ignore_index=True), quality)
        return True

    going = ask(list(range(len(questions))), crowd.assignments_per_hit, None)
    v = getattr(cfg, "video", None)
    for _ in range(v.vote_max if v is not None and v.vote == "adaptive" else 0):  # a pass adds <= 1 answer each
        if not going or not answers:
            break
        again, exclude = ask_again(questions, pd.concat(answers, ignore_index=True),
                                   pd.concat([hist, pd.DataFrame(assigns)], ignore_index=True), v)
        if not again:
            break
        going = ask(again, 1, exclude)
    ans = pd.concat(answers, ignore_index=True) if answers else pd.DataFrame(columns=ANSWER_COLUMNS)
    asg = pd.DataFrame(assigns, columns=ASSIGNMENT_COLUMNS)
    return ans.astype({"answer": "int64"}) if len(ans) else ans, asg, spent
