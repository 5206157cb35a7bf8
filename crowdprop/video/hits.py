"""Video questions as HITs on MTurk: the sandbox, production, or an MTurk-compatible endpoint
(crowdprop's local one), through :class:`crowdprop.crowd.mturk.MTurkBackend` and boto3.

The questions, golds, worker rules and pay are those of the simulated crowd (:mod:`.crowd`):
``[crowd] questions_per_hit`` questions of which ``golds_per_hit`` golds at random positions,
``assignments_per_hit`` workers, each assignment judged by
:func:`crowdprop.quality.rules.judge_assignment` and approved (paid) or rejected on MTurk,
workers blocked by :func:`crowdprop.quality.rules.workers_to_block` (a soft block is the
campaign's ``blocked`` qualification, a hard one CreateWorkerBlock), label questions of a HIT
whose every assignment was rejected asked again (at most :data:`crowdprop.video.crowd.MAX_ASKS`
times). With ``[quality] qualification_size > 0`` and a gold pool, the HIT type requires the
campaign's qualification test (:class:`VideoBackend`: gold regions asked as the HITs ask them,
graded by MTurk from an AnswerKey, pass mark ``qualification_pass``).
The page is ``hit_templates/video_unit.html``; its pictures are served from
``RUN_DIR/hit_images`` (at ``[mturk] image_base_url``, or at a local endpoint's ``/images/``) or
uploaded to ``[mturk] s3_bucket``.

Journal
-------
A round's crowd work is journaled in ``journal/round-0000k/`` before each step acts:

``hits.parquet``
    Every HIT of the round, one row per question slot (:data:`HIT_COLUMNS`), written before the
    first CreateHIT; a re-ask is appended before it is published.
``events.jsonl``
    One line per step, fsynced before the action it announces: ``admit`` (the HIT's most cost
    counted against the cap; CreateHIT follows with the token as UniqueRequestToken),
    ``published`` (its HIT id), ``unasked`` (refused by the budget), ``received`` (an assignment
    and its answers as read), ``verdict`` (the rules' judgment), ``settled`` (the state MTurk
    holds after the approval or rejection, or the one it set on its own), ``block`` (written once
    the block went through: blocking again is harmless), ``expired`` (likewise, after
    ``[crowd] round_timeout_s``), ``done`` (nothing more can arrive for a HIT), ``extend`` (the
    adaptive vote asks one more assignment of a done HIT: open again; CreateAdditionalAssignmentsForHIT
    follows with the event's request token) and ``extended`` (MTurk took it).

A process killed anywhere and run again reads the journal: a HIT admitted without a HIT id is
published again under its token (MTurk hands back the HIT made before: nothing is created or
charged twice), an assignment received before is not recorded again, a verdict not yet settled
is settled (approving approved work returns its state and pays nothing more).

Money
-----
Integer cents. Before each CreateHIT, what earlier rounds paid + what this round paid + the most
the round's open HITs can still cost (unsettled slots x (reward + fee)) + the new HIT's most must
fit under ``[campaign] budget_usd``; the backend's budget guard checks the same again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..campaign.ledger import FEES
from ..crowd.base import BlockKind, HitRequest, Question
from ..crowd.mturk import MTurkBackend, QualificationTest, checked_test
from ..errors import InputError, MTurkError, StateError
from ..io import append_jsonl, read_jsonl, read_parquet, write_parquet
from ..money import cap_cents
from ..quality.rules import Verdict, judge_assignment
from .crowd import (MAX_ASKS, MIXED, UNKNOWN, assemble_hit, block_kinds, hit_reward_cents, qualification_golds,
                    qualification_question, qualification_selection)

if TYPE_CHECKING:
    from ..crowd.targets import Target
    from .config import VideoConfig
    from .rundir import VideoRun

log = logging.getLogger(__name__)

HITS = "hits.parquet"
EVENTS = "events.jsonl"
HIT_IMAGES = "hit_images"
"""Folder of RUN_DIR with the pictures of the worker pages (served at image_base_url or by a local endpoint)."""
HIT_COLUMNS = ["token", "batch", "attempt", "slot", "question_id", "question", "region", "frame", "kind", "truth",
               "choices", "reward_cents", "assignments"]
"""``question``: the plan row of a label slot (-1 for a gold); ``truth``: a gold's answer (else
:data:`crowdprop.video.crowd.UNKNOWN`); ``choices``: the class ids on the page's keys 1-9, in order,
comma-separated (its "Other class" list offers the campaign's other classes)."""
MTURK_ANSWER_COLUMNS = ["round", "hit", "worker", "question", "region", "frame", "kind", "answer", "truth",
                        "approved", "assignment_id", "hit_id"]
MTURK_ASSIGNMENT_COLUMNS = ["round", "hit", "worker", "questions", "golds", "golds_correct", "seconds", "approved",
                            "reason", "reward_cents", "fee_cents", "assignment_id", "hit_id", "token", "status",
                            "settled_by"]
"""``approved``: the rules' verdict (what counts); ``status``: MTurk's state (``Approved`` is paid:
``reward_cents`` and ``fee_cents`` are then the HIT's, else 0); ``settled_by``: ``crowdprop``, or
``mturk`` for work MTurk settled on its own."""


# ------------------------------------------------------------------------------------ answers
def parse_unit_answers(xml: str, offered: Mapping[str, Sequence[int]], *, max_bytes: int | None = None,
                       n_classes: int | None = None) -> tuple[dict[str, int], str | None]:
    """Read MTurk's QuestionFormAnswers XML of a video HIT.

    ``offered``: question id -> the class ids on its keys. An answer is one of them (its id as
    text), with ``n_classes`` any class id below it (the page's "Other class" list offers every
    class of the campaign), or ``mixed`` (:data:`crowdprop.video.crowd.MIXED`). Returns the answers and
    None, or what could be read and a one-line reason the assignment is flagged (an unknown
    question, one answered twice or not at all, a value not offered). DTDs and entities are
    refused (defusedxml), never expanded."""
    from ..crowd.mturk_xml import MAX_ANSWER_CHARS, answer_fields

    limit = max_bytes if max_bytes is not None else 4096 + 256 * len(offered)
    fields, error = answer_fields(xml, limit)
    if error is not None:
        return {}, error
    out: dict[str, int] = {}
    seen: set[str] = set()
    problems: list[str] = []
    for qid, raw in fields:
        value = raw.strip().lower() if raw is not None else None
        if qid not in offered:
            problems.append(f"unknown question id {qid[:40]!r}")
        elif qid in seen:
            problems.append(f"question {qid[:40]!r} answered twice")
        elif value == "mixed":
            out[qid] = MIXED
        elif value is not None and len(value) <= MAX_ANSWER_CHARS and value.isdigit() \
                and (int(value) < n_classes if n_classes is not None else int(value) in set(offered[qid])):
            out[qid] = int(value)
        else:
            problems.append(f"answer {str(value)[:20]!r} to {qid[:40]!r} was not offered")
        seen.add(qid)
    missing = [q for q in offered if q not in seen]
    if missing:
        problems.append(f"missing answers to {len(missing)} question(s), first {missing[0]!r}")
    return out, ("; ".join(problems[:3]) if problems else None)


# ------------------------------------------------------------------------------------ the page
class VideoPage:
    """The page renderer :class:`crowdprop.crowd.mturk.MTurkBackend` calls: ``render(hit)`` draws the
    HIT's pictures into the image target (once each) and renders ``video_unit.html``;
    ``question_xml`` wraps it as an HTMLQuestion (refused past 64 KB before CreateHIT)."""

    def __init__(self, frames: Any, regions: Any, classes: list[str], target: Any, *,
                 frame_height: int = 0, scale: int = 4, draw: bool = True):
        from ..hits.render import PageRenderer

        self.frames, self.regions, self.classes = frames, regions, list(classes)
        self.target = target
        self.scale = scale
        self.draw = draw
        """False: the pages link their pictures without drawing them (simulated workers do not look)."""
        self._wrap = PageRenderer(lambda row: "", dict(enumerate(self.classes)), frame_height=frame_height)
        self.slots: dict[str, dict] = {}
        """Question id -> ``frame``, ``region``, ``choices`` (from the round's hits table)."""

    def add(self, hits: pd.DataFrame) -> None:
        for row in hits.itertuples(index=False):
            self.slots[str(row.question_id)] = {"frame": int(row.frame), "region": int(row.region),
                                                "choices": [int(c) for c in str(row.choices).split(",") if c != ""]}

    def class_name(self, category_id: int) -> str:
        return self.classes[int(category_id)]

    def picture_url(self, frame: int, region: int) -> str:
        from .page import highlight

        name = f"video-f{frame:05d}-r{region}.png"
        if self.draw and not self.target.has(name):
            self.target.put(name, highlight(self.frames[frame], self.regions[frame] == region, scale=self.scale),
                            "image/png")
        return str(self.target.url(name))

    def render(self, hit: HitRequest, masks: Any = None) -> str:
        from .page import render_hit

        rows = [dict(self.slots[q.question_id], qid=q.question_id, question=-1) for q in hit.questions]
        return render_hit(self.frames, self.regions, pd.DataFrame(rows), self.classes, None, scale=self.scale,
                          image_url=self.picture_url)

    def question_xml(self, html: str, *, token: str | None = None) -> str:
        return self._wrap.question_xml(html, token=token)


# ------------------------------------------------------------------------------------ the qualification test
class VideoBackend(MTurkBackend):
    """:class:`crowdprop.crowd.mturk.MTurkBackend` whose qualification test asks the video question:
    ``test_golds`` (``region, frame, truth``: :func:`crowdprop.video.crowd.qualification_golds`)
    each shown highlighted in its frame, one choice among every class and "mixed", graded by
    MTurk from an AnswerKey; the test's ``mask_rows`` are the regions, its ``labels`` the
    answers (a class id or ``MIXED``)."""

    test_golds: pd.DataFrame | None = None

    def test_xml(self) -> tuple[str, str]:
        from ..crowd.mturk_xml import answer_key_xml, question_form_xml

        t, g = self.test, self.test_golds
        if t is None or g is None:
            raise MTurkError("this campaign has no qualification test")
        page = self.page
        items = [(qualification_question(int(q.region)), "", page.picture_url(int(q.frame), int(q.region)))
                 for q in g.itertuples(index=False)]
        answers = [(qualification_question(int(q.region)), qualification_selection(int(q.truth)))
                   for q in g.itertuples(index=False)]
        choices = [(str(k), name) for k, name in enumerate(page.classes)] + [("mixed", "mixed")]
        form = question_form_xml(
            items, title="Qualification test: which class is the highlighted region?",
            question="Which class covers the highlighted region? Choose 'mixed' when no single class "
                     "covers about four fifths of it.", selections=choices,
            instructions=(f"Answer {len(items)} questions like those of the HITs: the class of the highlighted "
                          f"region of a video frame. Get at least {t.passing_percentage} % right to work on "
                          "the HITs."))
        return checked_test(form, answer_key_xml(answers), len(items))

    def test_type_text(self) -> tuple[str, str]:
        n = len(self.test) if self.test is not None else 0
        return (f"A short test of {n} questions on the class of a highlighted region of a video frame, for "
                f"the HITs of crowdprop campaign {self.campaign_id}.",
                "crowdprop, qualification, video, segmentation, class")


QUALIFICATION = "qualification.parquet"
"""RUN_DIR file of the qualification test's golds, written when an MTurk crowd first needs the test:
the test MTurk holds (found by name in later processes) stays the one graded, whatever golds are
imported later."""


def qualification(vr: VideoRun, *, keep: bool = False) -> tuple[Any, pd.DataFrame]:
    """The campaign's :class:`crowdprop.crowd.mturk.QualificationTest` and its golds (None and an
    empty table when ``[quality] qualification_size`` is 0 or there are no golds): the ones kept in
    :data:`QUALIFICATION`, else drawn from the pool (and kept with ``keep``)."""
    from .golds import pool

    cfg = vr.config
    p = vr.path / QUALIFICATION
    if p.exists():
        g = read_parquet(p)
    else:
        g = qualification_golds(pool(vr), cfg.quality, cfg.campaign.seed)
        if keep and len(g):
            write_parquet(p, g)
    if not len(g):
        return None, g
    return QualificationTest(mask_rows=tuple(int(r) for r in g["region"]), labels=tuple(int(t) for t in g["truth"]),
                             pass_share=cfg.quality.qualification_pass,
                             duration_s=cfg.mturk.test_duration_s), g


# ------------------------------------------------------------------------------------ the crowd
@dataclass
class VideoCrowd:
    """An MTurk backend with the video page, and how to wait between polls."""

    backend: Any
    """:class:`crowdprop.crowd.mturk.MTurkBackend` (``publish``, ``assignments_of``, ``settle``,
    ``hit_state``, ``expire``, ``block``, ``guard``)."""
    page: VideoPage
    where: Target
    sleep: Callable[[float], object] = time.sleep
    """Called between polls that brought nothing new (a local endpoint's simulated workers work then)."""
    clock: Callable[[], float] = time.time
    """Wall clock of ``[crowd] round_timeout_s``."""
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for c in [self.backend.close, *self.closers]:
            try:
                c()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the video crowd", exc_info=True)


def image_target(vr: VideoRun, where: Target) -> Any:
    """Where the worker pages' pictures go: ``[mturk] s3_bucket``, ``image_base_url``, or a local endpoint."""
    from ..hits.images import LocalFolderTarget, S3Target, s3_client

    section = vr.config.mturk
    if section.s3_bucket:
        key = None
        if section.s3_public:  # plain URLs named by a keyed hash of the picture (campaign.json image_url_key)
            if not vr.campaign.get("image_url_key"):
                import secrets

                vr.write_campaign(dict(vr.campaign, image_url_key=secrets.token_hex(32)))
            key = bytes.fromhex(vr.campaign["image_url_key"])
        return S3Target(s3_client(region=section.region, profile=where.profile), section.s3_bucket,
                        section.s3_prefix, expires_s=section.lifetime_s, public_key=key)
    folder = vr.path / HIT_IMAGES
    folder.mkdir(exist_ok=True)
    if section.image_base_url:
        return LocalFolderTarget(folder, section.image_base_url)
    if where.endpoint_url:
        return LocalFolderTarget(folder, where.endpoint_url.rstrip("/") + "/images")
    raise InputError(vr.path / "config.json", "[mturk]", "s3_bucket",
                     "workers need to see the pictures: set [mturk] s3_bucket (uploaded, presigned URLs) or "
                     "image_base_url (RUN_DIR/hit_images served at that https URL)")


def image_config(cfg: VideoConfig) -> Any:
    """The image workflow's :class:`crowdprop.config.Config` holding the video run's shared sections
    (what :class:`~crowdprop.crowd.mturk.MTurkBackend` is typed for)."""
    from ..config import Config

    return Config(campaign=cfg.campaign, crowd=cfg.crowd, quality=cfg.quality, simulation=cfg.simulation,
                  mturk=cfg.mturk)


def connect(vr: VideoRun, where: Target, *, client: Any = None, sleep: Callable[[float], object] | None = None,
            clock: Callable[[], float] | None = None, retry_wait_s: float = 1.0, draw: bool = True) -> VideoCrowd:
    """A :class:`VideoCrowd` publishing where ``where`` says (boto3 with the AWS credential chain
    unless ``client`` is given). ``draw=False``: the pages link pictures that are not drawn."""
    from ..crowd import mturk as _mturk
    from ..crowd.factory import quiet_botocore

    cfg = vr.config
    target = image_target(vr, where)
    if client is None:
        quiet_botocore()
        client = _mturk.connect(None if where.target == "local" else where.target, endpoint_url=where.endpoint_url,
                                profile=where.profile, region="us-east-1")
    # the pictures are drawn from the run directory's chunk stores, a chunk at a time
    page = VideoPage(vr.frame_store(), vr.unit_store()["regions"], vr.classes, target,
                     frame_height=cfg.mturk.frame_height, draw=draw)
    test, test_golds = qualification(vr, keep=True)
    backend = VideoBackend(
        client, config=image_config(cfg), mturk=cfg.mturk, page=page, target=where.target,
        guard=_mturk.BudgetGuard(cap_cents(cfg.campaign.budget_usd)), retry_wait_s=retry_wait_s,
        retry_max_wait_s=max(retry_wait_s, 60.0), sleep=time.sleep, campaign_id=vr.campaign_id(), test=test)
    backend.test_golds = test_golds
    return VideoCrowd(backend, page, where, sleep=sleep or time.sleep, clock=clock or time.time)


# ------------------------------------------------------------------------------------ one round
def question_id(r: int, batch: int, attempt: int, slot: int) -> str:
    """The form field of a question: unique within the campaign."""
    return f"v{r}-{batch}-{attempt}-{slot}"


def hit_token(campaign_id: str, r: int, batch: int, attempt: int) -> str:
    """The HIT's UniqueRequestToken (<= 64 characters)."""
    return f"{campaign_id}-v{r}-{batch}-{attempt}"[:64]


def _hit_rows(r: int, batch: int, attempt: int, token: str, slots, choices: np.ndarray, reward: int,
              assignments: int) -> pd.DataFrame:
    return pd.DataFrame({
        "token": token, "batch": batch, "attempt": attempt, "slot": np.arange(len(slots), dtype=np.int64),
        "question_id": [question_id(r, batch, attempt, k) for k in range(len(slots))],
        "question": slots.question, "region": slots.region, "frame": slots.frame, "kind": slots.kind,
        "truth": np.where(slots.kind == "gold", slots.truth, UNKNOWN),
        "choices": [",".join(map(str, c)) for c in choices[slots.region]],
        "reward_cents": reward, "assignments": assignments}, columns=HIT_COLUMNS)


@dataclass
class _Books:
    """What the journal says of the round so far."""

    admitted: list[str] = field(default_factory=list)
    hit_id: dict[str, str] = field(default_factory=dict)
    unasked: set[str] = field(default_factory=set)
    received: dict[str, dict] = field(default_factory=dict)
    verdict: dict[str, dict] = field(default_factory=dict)
    settled: dict[str, dict] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    started: float | None = None
    extend: dict[str, str] = field(default_factory=dict)
    """Request token of each assignment added to a HIT by the adaptive vote -> the HIT's token."""
    extended: set[str] = field(default_factory=set)
    """Those requests MTurk has taken."""

    def extra(self, token: str) -> int:
        """Assignments the adaptive vote added to the HIT ``token``."""
        return sum(1 for t in self.extend.values() if t == token)

    @classmethod
    def read(cls, path: Path) -> "_Books":
        b = cls()
        for e in read_jsonl(path):
            b.apply(e)
        return b

    def apply(self, e: dict) -> None:
        """One journal event into the books, as read back or as just written (the first record
        of an assignment stands)."""
        ev = e.get("event")
        if ev == "start":
            self.started = float(e["at"])
        elif ev == "admit" and e["token"] not in self.admitted:
            self.admitted.append(e["token"])
        elif ev == "published":
            self.hit_id[e["token"]] = e["hit_id"]
        elif ev == "unasked":
            self.unasked.add(e["token"])
        elif ev == "received":
            self.received.setdefault(e["assignment_id"], e)
        elif ev == "verdict":
            self.verdict.setdefault(e["assignment_id"], e)
        elif ev == "settled":
            self.settled.setdefault(e["assignment_id"], e)
        elif ev == "block":
            self.blocked.add(e["worker"])
        elif ev == "expired":
            self.expired.add(e["token"])
        elif ev == "done":
            self.done.add(e["token"])
        elif ev == "extend":  # an assignment more: the HIT is open again
            self.extend[e["request"]] = e["token"]
            self.done.discard(e["token"])
        elif ev == "extended":
            self.extended.add(e["request"])


class RoundHits:
    """Round ``r``'s questions asked through ``crowd`` (see the module's docstring)."""

    def __init__(self, vr: VideoRun, r: int, crowd: VideoCrowd, *, spent_cents: int, history: pd.DataFrame | None,
                 choices: np.ndarray):
        self.vr, self.r, self.crowd = vr, r, crowd
        self.cfg = vr.config
        self.jdir = vr.journal_dir(r)
        self.events = self.jdir / EVENTS
        self.spent_before = int(spent_cents)
        self.history = history
        self.choices = choices
        """Class ids on the keys per region, most probable first (at most 9); the page's "Other
        class" list offers the rest."""
        self.books = _Books.read(self.events)
        soft, hard = block_kinds(history, self.cfg.quality)
        self.blocked_before = soft | hard
        """Workers the rules blocked in earlier rounds (blocked then)."""

    # -- journal
    def _log(self, **event) -> None:
        append_jsonl(self.events, event)
        self.books.apply(event)

    def plan_hits(self, plan: pd.DataFrame, golds: pd.DataFrame) -> pd.DataFrame:
        """The round's HITs (journaled ``hits.parquet``, else made from ``plan`` and written)."""
        p = self.jdir / HITS
        if p.exists():
            return read_parquet(p)
        crowd = self.cfg.crowd
        per_hit = crowd.questions_per_hit - crowd.golds_per_hit
        parts = []
        cid = self.vr.campaign_id()
        for batch, start in enumerate(range(0, len(plan), per_hit)):
            take = plan.iloc[start:start + per_hit]
            parts.append(self._hit(cid, batch, 0, take, golds))
        hits = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=HIT_COLUMNS)
        write_parquet(p, hits)
        return hits

    def _hit(self, cid: str, batch: int, attempt: int, take: pd.DataFrame, golds: pd.DataFrame) -> pd.DataFrame:
        crowd = self.cfg.crowd
        n_gold = min(crowd.golds_per_hit, len(golds))
        rng = np.random.default_rng([self.cfg.campaign.seed, self.r, 3, batch, attempt])
        slots = assemble_hit(take, golds, n_gold, rng)
        return _hit_rows(self.r, batch, attempt, hit_token(cid, self.r, batch, attempt), slots, self.choices,
                         hit_reward_cents(len(slots), crowd), crowd.assignments_per_hit)

    # -- money
    def _unit_cents(self, h: pd.DataFrame) -> int:
        reward = int(h["reward_cents"].iloc[0])
        return reward + FEES.assignment_fee_cents(reward, int(h["assignments"].iloc[0]))

    def _slots(self, token: str, h: pd.DataFrame) -> int:
        """Assignments the HIT ``token`` asks for: its own and those the adaptive vote added."""
        return int(h["assignments"].iloc[0]) + self.books.extra(token)

    def _paid_cents(self) -> int:
        return sum(int(s["cents"]) for s in self.books.settled.values())

    def _committed_cents(self, by_token: dict[str, pd.DataFrame]) -> int:
        """Paid before and in this round + the most the open HITs of the round can still cost."""
        b = self.books
        settled_per: dict[str, int] = {}
        for aid, s in b.settled.items():
            tok = b.received[aid]["token"]
            settled_per[tok] = settled_per.get(tok, 0) + 1
        exposure = 0
        for tok in b.admitted:
            if tok in b.done or tok not in by_token:
                continue
            h = by_token[tok]
            exposure += max(0, self._slots(tok, h) - settled_per.get(tok, 0)) * self._unit_cents(h)
        return self.spent_before + self._paid_cents() + exposure

    # -- the loop
    def run(self, plan: pd.DataFrame, golds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Publish, poll, judge, settle and block until every HIT of the round is done; returns
        (answers, assignments) of the round."""
        base = golds.copy()  # gold uses before the round (plan_hits counts its own in a copy)
        hits = self.plan_hits(plan, golds.copy())
        if self.books.started is None:
            self._log(event="start", at=self.crowd.clock())
        self.crowd.page.add(hits)
        cap = cap_cents(self.cfg.campaign.budget_usd)
        while True:
            by_token = {t: h for t, h in hits.groupby("token", sort=False)}
            order = sorted(by_token, key=lambda t: (int(by_token[t]["attempt"].iloc[0]),
                                                    int(by_token[t]["batch"].iloc[0])))
            progress = self._publish(order, by_token, cap)
            progress |= self._send_extends()
            open_ = [t for t in order if t in self.books.hit_id and t not in self.books.done]
            if self.books.started is not None and self.crowd.clock() - self.books.started > \
                    self.cfg.crowd.round_timeout_s:
                for t in open_:
                    if t not in self.books.expired:  # expiring again after a stop is harmless
                        self.crowd.backend.expire(self.books.hit_id[t])
                        self._log(event="expired", token=t)
            for t in open_:
                progress |= self._collect(t, by_token[t])
                done, new = self._maybe_done(t, by_token[t], base, hits)
                if new is not None:  # journaled before the HIT is marked done, published next pass
                    hits = pd.concat([hits, new], ignore_index=True)
                    write_parquet(self.jdir / HITS, hits)
                    self.crowd.page.add(new)
                if done:
                    self._log(event="done", token=t)
                    progress = True
            if all(t in self.books.done or t in self.books.unasked for t in hits["token"].unique()):
                if self._vote(plan, hits, by_token, cap):
                    continue
                break
            if not progress:
                self.crowd.sleep(self.cfg.crowd.poll_interval_s)
        return self._tables(hits)

    def _publish(self, order: list[str], by_token: dict[str, pd.DataFrame], cap: int) -> bool:
        b = self.books
        did = False
        for t in order:
            if t in b.hit_id or t in b.unasked:
                continue
            h = by_token[t]
            most = int(h["assignments"].iloc[0]) * self._unit_cents(h)
            if t not in b.admitted:
                committed = self._committed_cents(by_token)
                if committed + most > cap:
                    log.info("round %d: HIT %s could cost %d cents and %d of the %d cents cap are spent or "
                             "committed; its questions stay unasked", self.r, t, most, committed, cap)
                    self._log(event="unasked", token=t, reason="budget")
                    continue
                self._log(event="admit", token=t, cents=most)
            guard = self.crowd.backend.guard
            if guard is not None:
                guard.update(self._committed_cents(by_token) - most, cap)
            req = HitRequest(token=t, round=self.r, batch=int(h["batch"].iloc[0]),
                             questions=tuple(Question(str(q.question_id), int(q.region), q.kind == "gold")
                                             for q in h.itertuples(index=False)),
                             assignments=int(h["assignments"].iloc[0]),
                             reward_usd=int(h["reward_cents"].iloc[0]) / 100, campaign=self.vr.campaign_id())
            hit_id = self.crowd.backend.publish(req)
            self._log(event="published", token=t, hit_id=hit_id)
            did = True
        return did

    # -- the adaptive vote
    def _vote(self, plan: pd.DataFrame, hits: pd.DataFrame, by_token: dict[str, pd.DataFrame], cap: int) -> bool:
        """``[video] vote = "adaptive"``, once every HIT is done: one more assignment on each HIT
        holding a region :func:`crowdprop.video.crowd.ask_again` asks again (MTurk gives a HIT's
        assignments to distinct workers, so the region's earlier workers are kept out), while the
        HIT has fewer than ``vote_max`` and the cap allows; journaled before it is sent. Returns
        whether any HIT was extended (the loop then collects again)."""
        from .crowd import ask_again

        v = self.cfg.video
        b = self.books
        if v.vote != "adaptive":
            return False
        ans, asg = self._answer_tables(hits)
        if not len(ans):
            return False
        hist = asg if self.history is None or not len(self.history) else pd.concat(
            [self.history[["worker", "golds", "golds_correct"]], asg[["worker", "golds", "golds_correct"]]],
            ignore_index=True)
        again, _ = ask_again(plan, ans, hist, v)
        if not again:
            return False
        need = set(plan["question"].to_numpy(np.int64)[again].tolist())
        token_of = {hid: t for t, hid in b.hit_id.items()}
        ok = ans.loc[(ans["kind"] == "label") & ans["approved"].astype(bool) & ans["question"].isin(need)]
        did = False
        for t in sorted({token_of[h] for h in ok["hit_id"] if h in token_of}):
            h = by_token[t]
            if t in b.expired or b.hit_id[t] in getattr(self.crowd.backend, "gone", ()) or \
                    self._slots(t, h) >= v.vote_max:
                continue  # off the market, or voted on enough
            unit = self._unit_cents(h)
            if self._committed_cents(by_token) + unit > cap:
                log.info("round %d: the vote's next assignment of HIT %s would pass the cap; not asked", self.r, t)
                continue
            self._log(event="extend", token=t, request=f"{t}-x{b.extra(t)}"[-64:], cents=unit)
            did = True
        if did:
            self._send_extends()
        return did

    def _send_extends(self) -> bool:
        """Send every journaled assignment request MTurk has not taken yet (again after a stop: MTurk
        knows the request token and adds nothing twice)."""
        b = self.books
        did = False
        for req, t in list(b.extend.items()):
            if req in b.extended:
                continue
            state = self.crowd.backend.extend(b.hit_id[t], 1, req)
            self._log(event="extended", request=req, state=state)
            did = True
        return did

    def _collect(self, token: str, h: pd.DataFrame) -> bool:
        """Record, judge, settle every assignment of one HIT MTurk lists; block workers the rules block."""
        b = self.books
        hit_id = b.hit_id[token]
        did = False
        offered = {str(q.question_id): [int(c) for c in str(q.choices).split(",") if c != ""]
                   for q in h.itertuples(index=False)}
        try:
            listed = self.crowd.backend.assignments_of(hit_id, ["Submitted", "Approved", "Rejected"])
        except Exception:
            if not self.crowd.backend.hit_state(hit_id)["gone"]:
                raise
            log.warning("HIT %s no longer exists on MTurk; nothing more can arrive for it", hit_id)
            return did
        for a in listed:
            aid = a["AssignmentId"]
            status = a.get("AssignmentStatus", "Submitted")
            if aid not in b.received:
                answers, flag = parse_unit_answers(a.get("Answer") or "", offered, n_classes=len(self.vr.classes))
                accept, submit = _seconds(a.get("AcceptTime")), _seconds(a.get("SubmitTime"))
                self._log(event="received", assignment_id=aid, hit_id=hit_id, token=token,
                          worker=a.get("WorkerId", ""), answers=answers, flag=flag,
                          seconds=max(0.0, submit - accept))
                did = True
            rec = b.received[aid]
            if aid not in b.verdict:
                v = self._judge(rec, h)
                n_gold, ok = _gold_score(rec, h)
                self._log(event="verdict", assignment_id=aid, approve=v.approve, reason=v.reason or "",
                          feedback=v.feedback, golds=n_gold, golds_correct=ok)
                did = True
            if aid not in b.settled:
                vd = b.verdict[aid]
                if status in ("Approved", "Rejected"):  # settled before: by MTurk on its own, or by us before a stop
                    state, by = status, "mturk"
                else:
                    state = self.crowd.backend.settle(aid, bool(vd["approve"]), vd["feedback"])
                    by = "crowdprop"
                self._log(event="settled", assignment_id=aid, state=state, by=by,
                          cents=self._unit_cents(h) if state == "Approved" else 0)
                did = True
                self._block()
        return did

    def _judge(self, rec: dict, h: pd.DataFrame) -> Verdict:
        if rec.get("flag"):
            return Verdict(False, "malformed", "The answers of this assignment could not be read "
                                               f"({rec['flag']}); we cannot approve it.")
        n_gold, ok = _gold_score(rec, h)
        return judge_assignment(n_gold, ok, rec["seconds"], len(h), self.cfg.quality)

    def _history(self) -> pd.DataFrame:
        b = self.books
        rows = [{"worker": b.received[aid]["worker"], "approved": bool(v["approve"]), "golds": int(v["golds"]),
                 "golds_correct": int(v["golds_correct"])} for aid, v in b.verdict.items()]
        now = pd.DataFrame(rows, columns=["worker", "approved", "golds", "golds_correct"])
        if self.history is not None and len(self.history):
            return pd.concat([self.history[["worker", "approved", "golds", "golds_correct"]], now],
                             ignore_index=True)
        return now

    def _block(self) -> None:
        soft, hard = block_kinds(self._history(), self.cfg.quality)
        for kind, workers in ((BlockKind.SOFT, soft), (BlockKind.HARD, hard)):
            for w in sorted(workers - self.books.blocked - self.blocked_before):
                self.crowd.backend.block(w, kind)  # again after a stop is harmless: logged once it went through
                self._log(event="block", worker=w, kind=str(kind))

    def _maybe_done(self, token: str, h: pd.DataFrame, golds: pd.DataFrame,
                    hits: pd.DataFrame) -> tuple[bool, pd.DataFrame | None]:
        """Whether nothing more can arrive for a HIT: every slot received, or the crowd has nothing
        pending or available for it (expired, or gone) and lists no assignment not received yet
        (GetHIT first: work submitted after it was pending then, so nothing slips between the
        two), and every assignment settled. With it, the re-ask HIT's rows when every assignment
        of it was rejected (None when there is none, or it is in ``hits`` already)."""
        b = self.books
        hit_id = b.hit_id[token]
        mine = {aid for aid, rec in b.received.items() if rec["token"] == token}
        if any(aid not in b.settled for aid in mine):
            return False, None
        if len(mine) < self._slots(token, h):
            st = self.crowd.backend.hit_state(hit_id)
            if not st["gone"]:
                if st["pending"] or st["available"]:
                    return False, None
                listed = {a["AssignmentId"] for a in self.crowd.backend.assignments_of(
                    hit_id, ["Submitted", "Approved", "Rejected"])}
                if listed - mine:
                    return False, None
        attempt = int(h["attempt"].iloc[0])
        if not mine or any(b.verdict[aid]["approve"] for aid in mine) or attempt + 1 >= MAX_ASKS:
            return True, None
        batch = int(h["batch"].iloc[0])
        cid = self.vr.campaign_id()
        if hit_token(cid, self.r, batch, attempt + 1) in set(hits["token"]):
            return True, None  # made before a stop
        take = h.loc[h["kind"] == "label", ["question", "region", "frame"]].assign(truth=UNKNOWN)
        pool = golds.copy()
        pool["used"] = pool["used"] + pool["region"].map(self._gold_uses()).fillna(0).astype(np.int64)
        return True, self._hit(cid, batch, attempt + 1, take, pool)

    def _gold_uses(self) -> pd.Series:
        hits = read_parquet(self.jdir / HITS)
        return hits.loc[hits["kind"] == "gold"].groupby("region").size()

    # -- the round's tables
    def _tables(self, hits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        b = self.books
        write_parquet(self.jdir / HITS, hits.assign(hit_id=[b.hit_id.get(t, "") for t in hits["token"]]))
        return self._answer_tables(hits)

    def _answer_tables(self, hits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The round's answers and assignments as the journal has them."""
        b = self.books
        by_qid = hits.set_index("question_id")
        answers, assigns = [], []
        for aid, rec in b.received.items():
            h = hits.loc[hits["token"] == rec["token"]]
            v, s = b.verdict[aid], b.settled[aid]
            paid = s["state"] == "Approved"
            reward = int(h["reward_cents"].iloc[0])
            fee = FEES.assignment_fee_cents(reward, int(h["assignments"].iloc[0]))
            assigns.append({"round": self.r, "hit": int(h["batch"].iloc[0]), "worker": rec["worker"],
                            "questions": len(h), "golds": int(v["golds"]), "golds_correct": int(v["golds_correct"]),
                            "seconds": float(rec["seconds"]), "approved": bool(v["approve"]), "reason": v["reason"],
                            "reward_cents": reward if paid else 0, "fee_cents": fee if paid else 0,
                            "assignment_id": aid, "hit_id": rec["hit_id"], "token": rec["token"],
                            "status": s["state"], "settled_by": s["by"]})
            if rec.get("flag"):
                continue  # a flagged assignment's answers are never used
            q = by_qid.loc[list(rec["answers"])]
            answers.append(pd.DataFrame({
                "round": self.r, "hit": int(h["batch"].iloc[0]), "worker": rec["worker"],
                "question": q["question"].to_numpy(np.int64), "region": q["region"].to_numpy(np.int64),
                "frame": q["frame"].to_numpy(np.int64), "kind": q["kind"].to_numpy(str),
                "answer": np.array(list(rec["answers"].values()), np.int64), "truth": q["truth"].to_numpy(np.int64),
                "approved": bool(v["approve"]), "assignment_id": aid, "hit_id": rec["hit_id"]}))
        ans = pd.concat(answers, ignore_index=True) if answers else pd.DataFrame(
            {c: pd.Series(dtype=object if c in ("worker", "kind", "assignment_id", "hit_id") else
                          bool if c == "approved" else "int64") for c in MTURK_ANSWER_COLUMNS})
        asg = pd.DataFrame(assigns, columns=MTURK_ASSIGNMENT_COLUMNS)
        return ans, asg


def _gold_score(rec: dict, h: pd.DataFrame) -> tuple[int, int]:
    g = h.loc[h["kind"] == "gold"]
    got = rec.get("answers") or {}
    ok = sum(1 for q in g.itertuples(index=False) if got.get(str(q.question_id)) == int(q.truth))
    return len(g), (0 if rec.get("flag") else ok)


def _seconds(t: Any) -> float:
    import datetime as dt

    if isinstance(t, dt.datetime):
        return t.timestamp()
    return float(t or 0.0)


def region_choices(probs: np.ndarray, regions: np.ndarray, n_regions: int, keyed: int = 9) -> np.ndarray:
    """int64 ``(n_regions, min(K, keyed))``: each region's classes by mean probability, most probable
    first (ties by class id), as the worker page lists them."""
    from .units import pooled

    mean = pooled(regions, probs, n_regions)
    k = mean.shape[1]
    order = np.lexsort((np.broadcast_to(np.arange(k), mean.shape), -mean), axis=1)
    return order[:, :min(k, keyed)].astype(np.int64)


def discard_stale(vr: VideoRun) -> list[int]:
    """Rounds in progress whose crowd work was on an in-process endpoint that stopped with its
    process: their HITs and events are dropped and asked again (nothing of it was paid for real)."""
    out: list[int] = []
    d = vr.path / "journal"
    if not d.is_dir():
        return out
    for j in sorted(d.iterdir()):
        if (j / "crowd.done").exists():
            continue
        if (j / HITS).exists() or (j / EVENTS).exists():
            (j / HITS).unlink(missing_ok=True)
            (j / EVENTS).unlink(missing_ok=True)
            out.append(int(j.name.rsplit("-", 1)[-1]))
    if out:
        log.info("round(s) %s were in progress on a local endpoint that stopped with its process; asked again",
                 ", ".join(map(str, out)))
    return out


def open_hits(vr: VideoRun) -> list[str]:
    """HIT ids the journal of the round in progress published and did not see done (live, maybe)."""
    out: list[str] = []
    d = vr.path / "journal"
    for j in sorted(d.iterdir()) if d.is_dir() else []:
        books = _Books.read(j / EVENTS)
        out += [h for t, h in books.hit_id.items() if t not in books.done]
    return out


def check_gt(vr: VideoRun) -> None:
    if vr.gt() is None:
        raise StateError(f"{vr.path}: simulated workers answer from ground truth, and this run has none "
                         "(init with --gt)")


def region_truth(vr: VideoRun) -> np.ndarray:
    """A careful worker's answer to every region of the run (a class id or ``MIXED``), from ground truth."""
    from .units import unit_truth

    check_gt(vr)
    gt = vr.gt()
    assert gt is not None
    regions = vr.units()["regions"]
    truth, _ = unit_truth(regions, gt, int(regions.max()) + 1, len(vr.classes), mixed_below=vr.config.video.mixed_below)
    return truth


def local_crowd(vr: VideoRun) -> VideoCrowd:
    """Start crowdprop's local MTurk-compatible endpoint in this process (127.0.0.1, a free port) with
    simulated workers doing the HITs (:class:`crowdprop.video.localcrowd.EndpointWorkers`), and a
    :class:`VideoCrowd` publishing on it through boto3. The simulated workers do not look at the
    pictures: they are linked, not drawn, unless campaign.json's crowd says ``"images": "render"``
    (as for images). The endpoint stops with :meth:`VideoCrowd.close`;
    a round that was in progress on an earlier process's endpoint is asked again (:func:`discard_stale`)."""
    from ..crowd.factory import local_client
    from ..crowd.targets import Target
    from ..mturk_local import LocalMTurk, ManualClock, serve
    from ..replay.workers import WorkerPool
    from .localcrowd import EndpointWorkers

    cfg = vr.config
    truth = region_truth(vr)
    discard_stale(vr)
    clock = ManualClock()
    folder = vr.path / HIT_IMAGES
    folder.mkdir(exist_ok=True)
    local = LocalMTurk({}, WorkerPool.build(cfg.simulation, cfg.campaign.seed), simulate=False, images_dir=folder,
                       clock=clock, balance=max(10000.0, cfg.campaign.budget_usd))
    handle = serve(local)
    try:
        workers = EndpointWorkers(local, truth, len(vr.classes), cfg.simulation, cfg.campaign.seed)
        crowd = connect(vr, Target("local", handle.url), client=local_client(handle.url), sleep=workers.step,
                        clock=clock, retry_wait_s=0.05, draw=vr.crowd.get("images", "skip") == "render")
    except BaseException:
        handle.stop()
        raise
    crowd.closers.append(handle.stop)
    log.info("local MTurk endpoint for %s at %s", vr.path, handle.url)
    return crowd


def resolve_target(vr: VideoRun, *, target: str | None = None, endpoint_url: str | None = None,
                   profile: str | None = None) -> Target:
    """Where an ``mturk`` video run publishes: the options given, else what campaign.json records
    (``sandbox`` at first). A run that published goes on where it started; production is never
    assumed (``target="production"`` must be given each time)."""
    from ..crowd.targets import TARGETS, Target

    crowd = vr.crowd
    if crowd.get("kind") != "mturk":
        raise StateError(f"{vr.path}: its crowd is '{crowd.get('kind')}'; --target/--endpoint-url/--profile "
                         "apply to MTurk runs only (crowdprop video init --crowd mturk)")
    recorded = crowd.get("target", "sandbox")
    started = len(vr.rounds()) > 1 or any((vr.path / "journal").glob(f"*/{EVENTS}"))
    if target is None:
        target = "local" if endpoint_url and recorded != "production" and not started else recorded
        if target == "production":
            raise StateError(f"{vr.path}: this campaign runs on the production MTurk (real money); "
                             "continue it with --target production")
    if target not in TARGETS:
        raise InputError("command line", None, "--target", f"must be one of {', '.join(TARGETS)}")
    if target != recorded and started:
        raise StateError(f"{vr.path}: this campaign was started on {Target(recorded).describe()} and its HITs live "
                         f"there; it cannot move to {Target(target).describe()}")
    url = endpoint_url or crowd.get("endpoint_url") or None
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise InputError("command line", None, "--endpoint-url", "must start with http:// or https://")
    if target == "local" and url is None:
        raise InputError("command line", None, "--endpoint-url", "a local target needs the endpoint's URL")
    return Target(target=target, endpoint_url=url, profile=profile or crowd.get("profile") or None)


def record_target(vr: VideoRun, where: Target) -> None:
    """Write the target into campaign.json (no credentials)."""
    entry = where.entry()
    entry.pop("image_root", None)
    if entry != vr.crowd:
        vr.write_campaign(dict(vr.campaign, crowd=entry))
