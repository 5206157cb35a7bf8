"""Simulated workers doing video HITs on crowdprop's local MTurk-compatible endpoint.

The endpoint (:class:`crowdprop.mturk_local.LocalMTurk`, started with ``simulate=False``) holds
the HITs the campaign published through boto3; :class:`EndpointWorkers` does them the way a
person in a browser would, through the endpoint's worker side: it reads each available HIT's page
(the ``data-question-id`` and ``data-region`` of every question fieldset), accepts a slot as a
simulated worker (:func:`crowdprop.video.crowd.simulated_workers`: the same accuracies and
speeds as the in-process replay), answers each question from ground truth with that worker's
accuracy (:func:`crowdprop.video.crowd.answer`), and submits the form (``external_submit``).
Before any HIT each worker takes the campaign's qualification test on the endpoint's worker side
(``take_test``; answers drawn as the in-process replay draws them), and the endpoint keeps workers
out as MTurk does (failed the test, blocked, or holding a slot of the HIT already).

Draws are seeded by the pool seed and the HIT's token (its RequesterAnnotation), so a HIT gets
the same workers and answers in any process. With a :class:`~crowdprop.mturk_local.ManualClock`
the server clock moves on by each worker's working time between accept and submit (the quality
rules see real durations), and past a HIT's expiry when no worker may take its open slots.
"""
from __future__ import annotations

import logging
import re
import zlib
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import numpy as np

from ..errors import MTurkError
from .crowd import MIXED, Worker, answer, qualification_answers, qualification_selection, simulated_workers

log = logging.getLogger(__name__)

_REGION_QUESTION = re.compile(r"^region-(\d+)$")


class _Questions(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "fieldset" and a.get("data-question-id") and (a.get("data-region") or "").isdigit():
            self.found.append((str(a["data-question-id"]), int(a["data-region"] or 0)))


def page_regions(html: str) -> list[tuple[str, int]]:
    """``(question id, region)`` of every question fieldset of a video worker page, in order."""
    p = _Questions()
    p.feed(html)
    return p.found


def stable_seed(text: str) -> int:
    """A process-independent integer of ``text`` (the draws of a HIT)."""
    return zlib.crc32(text.encode())


def worker_id(worker: Worker) -> str:
    """An MTurk-style worker id (``^A[A-Z0-9]+$``) for a simulated worker."""
    return "A" + worker.worker.upper()


class EndpointWorkers:
    """Simulated workers for the video HITs of a local endpoint (see the module's docstring).

    Parameters
    ----------
    local : LocalMTurk
        The endpoint's service (``simulate=False``).
    truth : ndarray of int64
        A careful worker's answer per region (a class id, or ``MIXED``).
    n_classes : int
    sim : SimulationSection
        The crowd: workers, accuracies, spammers, seconds per question.
    seed : int
    """

    def __init__(self, local: Any, truth: np.ndarray, n_classes: int, sim: Any, seed: int):
        self.local = local
        self.truth = np.asarray(truth, np.int64)
        self.n_classes = int(n_classes)
        self.workers = simulated_workers(sim, seed)
        self.seed = int(seed)
        self.submitted = 0
        self.tested: set[str] = set()
        """Qualification types whose test every worker has taken."""

    def _hits(self) -> list[dict]:
        out, token = [], None
        while True:
            page = self.local.call("ListHITs", {"MaxResults": 100, **({"NextToken": token} if token else {})})
            out += page.get("HITs", [])
            token = page.get("NextToken")
            if not token:
                return out

    def take_tests(self) -> int:
        """Every worker takes, once, each video qualification test the endpoint holds (questions
        ``region-<id>``, :func:`crowdprop.video.crowd.qualification_question`) through its worker
        side, answering with :func:`crowdprop.video.crowd.qualification_answers` (the in-process
        replay's draws); the endpoint grades them from the AnswerKey. Returns the tests taken."""
        n = 0
        for t in self.local.tests():
            qt = t["QualificationTypeId"]
            if qt in self.tested:
                continue
            self.tested.add(qt)
            _, _, _, items = self.local.test_page(qt)
            asked = [(it.identifier, int(m.group(1)), {sid for sid, _ in it.selections}) for it in items
                     if (m := _REGION_QUESTION.match(it.identifier))]
            if not asked:
                continue  # not a video test
            truth = self.truth[[reg for _, reg, _ in asked]]
            for i, w in enumerate(self.workers):
                got = qualification_answers(w, i, truth, self.n_classes, self.seed)
                picks = {qid: qualification_selection(int(a)) for (qid, _, offered), a in zip(asked, got)
                         if qualification_selection(int(a)) in offered}
                try:
                    self.local.take_test(qt, worker_id(w), picks)
                    n += 1
                except MTurkError:
                    continue  # taken before (one try), e.g. by this worker in an earlier process
        return n

    def step(self, _seconds: float = 0.0) -> int:
        """Take any new qualification test (:meth:`take_tests`), then do every open slot of every
        available HIT that a worker may take (a worker who failed the test may not); move a manual
        clock past the expiry of HITs nobody may take. Returns the number of assignments submitted.
        Has the signature of ``time.sleep`` (the campaign calls it between polls)."""
        self.take_tests()
        done = 0
        stuck_until: float | None = None
        for h in self._hits():
            if h.get("HITStatus") != "Assignable" or not int(h.get("NumberOfAssignmentsAvailable") or 0):
                continue
            hit_id = h["HITId"]
            key = h.get("RequesterAnnotation") or hit_id
            qs = page_regions(self.local.hit_page(hit_id))
            if not qs:
                continue
            rng = np.random.default_rng([self.seed, stable_seed(key)])
            slots = int(h["NumberOfAssignmentsAvailable"])
            for i in rng.permutation(len(self.workers)):
                if slots == 0:
                    break
                w = self.workers[int(i)]
                try:
                    aid = self.local.accept(hit_id, worker_id(w))
                except MTurkError:
                    continue  # blocked, or done with this HIT already
                r = np.random.default_rng([self.seed, int(i), stable_seed(key)])
                got = answer(w, self.truth[[reg for _, reg in qs]], self.n_classes, r)
                seconds = float(len(qs) * w.seconds * r.lognormal(0, 0.2))
                if hasattr(self.local.clock, "advance"):
                    self.local.clock.advance(seconds)
                fields = [("assignmentId", aid)] + [(qid, "mixed" if int(a) == MIXED else str(int(a)))
                                                    for (qid, _), a in zip(qs, got)]
                self.local.external_submit(fields, worker_id=worker_id(w), hit_id=hit_id)
                slots -= 1
                done += 1
            if slots:
                raw = h.get("Expiration")
                exp = raw.timestamp() if isinstance(raw, datetime) else float(raw or 0)
                stuck_until = exp if stuck_until is None else max(stuck_until, exp)
        if not done and stuck_until is not None and hasattr(self.local.clock, "advance"):
            log.info("no simulated worker may take the open slots; the endpoint's clock moves past their expiry")
            self.local.clock.advance(max(0.0, stuck_until - self.local.clock()) + 1.0)
        self.submitted += done
        return done
