"""A person at the local endpoint, in a browser: the worker page of a HIT, accepting it,
submitting the form (what MTurk does with a POST to ``/mturk/externalSubmit``), and taking a
qualification test once.

The routes are :mod:`.server`'s; this is what they call. A browser worker names themself with
an MTurk-style worker id and can only submit an assignment the endpoint gave them.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from ..errors import MTurkError
from .pages import answers_xml
from .qualification import PageItem, test_page
from .records import ASSIGNMENT_ID_NOT_AVAILABLE, WORKER_ID, Assignment
from .simulation import Simulation


class BrowserWorker(Simulation):
    """What a person does: open a HIT's page, accept, submit; take a qualification test."""

    def hit_page(self, hit_id: str) -> str:
        """The worker page (HTMLContent) of a HIT."""
        with self._lock:
            self._advance()
            hit = self._get_hit(hit_id)
            if hit.html is None:
                raise self._err(f"Hit {hit_id} has no HTMLQuestion page.", "AWS.MechanicalTurk.InvalidHITState")
            return hit.html

    def accept(self, hit_id: str, worker_id: str) -> str:
        """A (browser) worker accepts a HIT; returns the new assignment's (random) id.

        ``worker_id`` must look like an MTurk worker id (``^A[A-Z0-9]{1,63}$``), so
        that the requester can block it. A worker holds at most one assignment of a
        HIT: accepting again is refused (handing back the held id would give it to
        anyone who knows the worker id)."""
        if not isinstance(worker_id, str) or not WORKER_ID.match(worker_id):
            raise MTurkError("A worker id is an upper-case A followed by 1 to 63 upper-case letters and digits.",
                             "AWS.ParameterOutOfRange")
        with self._lock:
            self._advance()
            hit = self._get_hit(hit_id)
            now = self.clock()
            if self._status(hit, now)[0] != "Assignable":
                raise self._err(f"Hit {hit_id} is not available.", "AWS.MechanicalTurk.InvalidHITState")
            if not self._can_work(worker_id, hit):
                raise self._err(f"Worker {worker_id} may not work on HIT {hit_id} (blocked, not qualified, "
                                "or already holding or done with one of its assignments).",
                                "AWS.MechanicalTurk.PermissionDenied")
            a = Assignment(self._new_id("assignment"), hit.id, worker_id, "Accepted", "browser",
                            accept_time=now, deadline=now + hit.type.assignment_duration)
            self._assignments[a.id] = a
            self._accepted.add(a.id)
            hit.assignments.append(a.id)
            return a.id

    def _browser_assignment(self, assignment_id: str, worker_id: str | None, hit_id: str | None) -> Assignment:
        """The browser assignment ``assignment_id`` if ``worker_id`` holds it (on ``hit_id``, when given)."""
        a = self._assignments.get(assignment_id)
        if a is None or a.source != "browser" or (hit_id is not None and a.hit_id != hit_id):
            raise self._err(f"Assignment {assignment_id[:64]} does not exist on this HIT: accept the HIT first.",
                            "AWS.MechanicalTurk.AssignmentDoesNotExist")
        if worker_id is None or worker_id != a.worker_id:
            raise self._err(f"Assignment {assignment_id} is not this worker's (give the workerId that accepted it).",
                            "AWS.MechanicalTurk.PermissionDenied")
        return a

    def check_holder(self, assignment_id: str, worker_id: str | None, hit_id: str) -> None:
        """Raise :class:`MTurkError` unless ``worker_id`` accepted ``assignment_id`` on ``hit_id`` (changes nothing)."""
        with self._lock:
            self._advance()
            self._browser_assignment(assignment_id, worker_id, hit_id)

    def external_submit(self, fields: Iterable[tuple[str, str]], *, worker_id: str | None = None,
                        hit_id: str | None = None) -> str:
        """What MTurk does with a POST to ``/mturk/externalSubmit``.

        Every field except ``assignmentId`` becomes an Answer. The assignment must
        be one :meth:`accept` issued to ``worker_id`` (on ``hit_id``, when given)
        and still open. Returns the assignment id.
        """
        fields = list(fields)
        aids = [v for k, v in fields if k == "assignmentId"]
        answers = [(k, v) for k, v in fields if k != "assignmentId"]
        if not aids or not aids[0]:
            raise MTurkError("The form has no assignmentId field.", "AWS.MissingParameters")
        aid = aids[0]
        if aid == ASSIGNMENT_ID_NOT_AVAILABLE:
            raise MTurkError("This is a preview: accept the HIT before submitting.",
                             "AWS.MechanicalTurk.InvalidAssignmentState")
        with self._lock:
            self._advance()
            now = self.clock()
            a = self._browser_assignment(aid, worker_id, hit_id)
            if a.state != "Accepted":
                raise self._err(f"Assignment {aid} has already been submitted or is no longer available.",
                                "AWS.MechanicalTurk.InvalidAssignmentState")
            accepted = a.accept_time if a.accept_time is not None else now  # accept() always sets it
            self._submit(a, self._hits[a.hit_id], answers_xml(answers), accept_time=accepted, submit_time=now)
            return a.id

    # ------------------------------------------------------------------ qualification tests in a browser
    def tests(self) -> list[dict]:
        """The active qualification types with a Test a person can take (``QualificationTypeId``, ``Name``)."""
        with self._lock:
            return [{"QualificationTypeId": qt, "Name": self._qual_types[qt]["Name"]} for qt in self._tests
                    if self._qual_types[qt]["QualificationTypeStatus"] == "Active"]

    def test_page(self, qt_id: str) -> tuple[str, str, str, list[PageItem]]:
        """``(name, title, overview, items)`` of a qualification type's Test (:func:`.qualification.test_page`)."""
        with self._lock:
            q = self._qual_types.get(qt_id)
            if q is None or qt_id not in self._tests:
                raise self._err(f"QualificationType {qt_id} has no test.",
                                "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
            return (q["Name"], *test_page(q["Test"]))

    def take_test(self, qt_id: str, worker_id: str, answers: Mapping[str, str]) -> int | None:
        """A (browser) worker takes a qualification test, once, as MTurk grades it: the selections are
        scored with the AnswerKey and the qualification granted with the resulting IntegerValue
        (returned). A test without an AnswerKey waits for the requester (None: nothing granted)."""
        if not isinstance(worker_id, str) or not WORKER_ID.match(worker_id):
            raise MTurkError("A worker id is an upper-case A followed by 1 to 63 upper-case letters and digits.",
                             "AWS.ParameterOutOfRange")
        with self._lock:
            self._advance()
            self.test_page(qt_id)
            if (qt_id, worker_id) in self._test_takers or (qt_id, worker_id) in self._quals:
                raise self._err(f"Worker {worker_id} has taken this test already (one try).",
                                "AWS.MechanicalTurk.PermissionDenied")
            questions, key = self._tests[qt_id]
            now = self.clock()
            self._test_takers[(qt_id, worker_id)] = now
            if key is None:
                return None
            offered = {q.identifier: set(q.selections) for q in questions}
            selected = {k: frozenset([v]) for k, v in answers.items() if v in offered.get(k, ())}
            value = key.value(key.score(selected))
            self._quals[(qt_id, worker_id)] = {"QualificationTypeId": qt_id, "WorkerId": worker_id, "GrantTime": now,
                                               "IntegerValue": value, "Status": "Granted"}
            return value
