"""Simulated workers, the worker page and its submit, images, faults."""
from __future__ import annotations

import http.client
import json
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdprop.crowd.base import content_key
from crowdprop.mturk_local import FaultConfig, answers_xml, page_questions, parse_answers_xml

from .conftest import TRUTH, client_for, hit_kwargs, make_pool

NS = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd}"


def _answers(xml: str) -> list[tuple[str, str]]:
    """QuestionFormAnswers parsed with the standard library only (independent of the code under test)."""
    root = ET.fromstring(xml)
    assert root.tag == NS + "QuestionFormAnswers"
    return [(a.find(NS + "QuestionIdentifier").text, a.find(NS + "FreeText").text) for a in root.findall(NS + "Answer")]


def test_simulated_answers_are_the_worker_pools_answers(endpoint):
    pool = make_pool(workers=12, seed=11)
    h, c = endpoint(pool=pool)
    qs = [(f"r0b3q{i}", mid) for i, mid in enumerate(range(120, 140))]
    hit = c.create_hit(**hit_kwargs(qs, MaxAssignments=4, UniqueRequestToken="camp-r0-b3"))["HIT"]
    asg = c.list_assignments_for_hit(HITId=hit["HITId"])["Assignments"]
    # answers follow what the HIT asks (its question ids), not its token or id
    key = content_key([qid for qid, _ in qs])
    expected_workers = {pool.worker_ids[i] for i in pool.pick(key, 4)}
    assert {a["WorkerId"] for a in asg} == expected_workers and len(asg) == 4
    n_disagree = 0
    for a in asg:
        w = pool.index(a["WorkerId"])
        want = [(qid, "yes" if pool.answer(w, f"{key}:{qid}", TRUTH[mid]) else "no") for qid, mid in qs]
        got = _answers(a["Answer"])
        assert got == want
        n_disagree += sum(v != ("yes" if TRUTH[mid] else "no") for (_, v), (_, mid) in zip(got, qs))
        seconds = (a["SubmitTime"] - a["AcceptTime"]).total_seconds()
        assert seconds == pytest.approx(pool.seconds(w, key, len(qs)), abs=1e-3)
        assert a["Deadline"].timestamp() == pytest.approx(a["AcceptTime"].timestamp() + 600)
    assert n_disagree > 0  # accuracy 0.8 and spammers: someone is wrong somewhere in 80 answers


def test_answer_xml_round_trip_and_escaping():
    fields = [("q<1>", "yes"), ("q&2", "no"), ("cb", "a"), ("cb", "b"), ("ünï", "é")]
    xml = answers_xml(fields)
    assert xml.isascii()
    assert _answers(xml) == [("q<1>", "yes"), ("q&2", "no"), ("cb", "a|b"), ("ünï", "é")]
    assert parse_answers_xml(xml) == _answers(xml)


def test_page_questions_read_fieldsets_not_text():
    page = ('<p>data-question-id="decoy"</p><fieldset class="cp-question" data-question-id="q1" data-mask-id="7">'
            '</fieldset><fieldset data-question-id="q&amp;2" data-mask-id="x"></fieldset><fieldset></fieldset>')
    got = [(q.question_id, q.mask_id) for q in page_questions(page)]
    assert got == [("q1", 7), ("q&2", None)]


def _post_form(url: str, fields: list[tuple[str, str]]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _accept(url: str, hit_id: str, worker: str) -> str:
    """POST the accept form; the assignment id the endpoint redirects to."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", f"/hits/{hit_id}/accept", body=urllib.parse.urlencode({"workerId": worker}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 303
    return urllib.parse.parse_qs(urlsplit(r.getheader("Location")).query)["assignmentId"][0]


def test_external_submit_records_exactly_those_answers(endpoint):
    h, c = endpoint()
    hit = c.create_hit(**hit_kwargs([("q0", 100), ("q1", 101), ("q2", 102)], MaxAssignments=2,
                                    RequesterAnnotation="campaign x manual"))["HIT"]
    hid = hit["HITId"]
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 0  # "manual": no simulated workers
    aid = _accept(h.url, hid, "ABROWSER1")
    fields = [("assignmentId", aid), ("q0", "yes"), ("q1", "no"), ("q2", "yes")]
    status, _ = _post_form(f"{h.url}/mturk/externalSubmit?workerId=ABROWSER1&hitId={hid}", fields)
    assert status == 200
    (a,) = c.list_assignments_for_hit(HITId=hid)["Assignments"]
    assert (a["AssignmentId"], a["WorkerId"], a["AssignmentStatus"]) == (aid, "ABROWSER1", "Submitted")
    assert _answers(a["Answer"]) == [("q0", "yes"), ("q1", "no"), ("q2", "yes")]
    # the same assignment cannot be submitted twice, nor can the worker do the HIT again
    assert _post_form(f"{h.url}/mturk/externalSubmit?workerId=ABROWSER1&hitId={hid}", fields)[0] == 400
    assert _post_form(f"{h.url}/hits/{hid}/accept", [("workerId", "ABROWSER1")])[0] == 403
    preview = [("assignmentId", "ASSIGNMENT_ID_NOT_AVAILABLE"), ("q0", "no")]
    assert _post_form(f"{h.url}/mturk/externalSubmit?workerId=ABROWSER2&hitId={hid}", preview)[0] == 400
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 1


def test_worker_page_preview_accept_and_submit(endpoint):
    h, c = endpoint(simulate=False)
    qs = [("q0", 100), ("q1", 101)]
    hid = c.create_hit(**hit_kwargs(qs, Title="page test"))["HIT"]["HITId"]
    u = urlsplit(h.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", f"/hits/{hid}")
    r = conn.getresponse()
    r.read()
    assert r.status == 302
    loc = urllib.parse.parse_qs(urlsplit(r.getheader("Location")).query)
    assert loc["assignmentId"] == ["ASSIGNMENT_ID_NOT_AVAILABLE"] and loc["turkSubmitTo"] == [h.url]
    conn.request("POST", f"/hits/{hid}/accept", body="workerId=ABROWSER9",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    assert r.status == 303
    loc = urllib.parse.parse_qs(urlsplit(r.getheader("Location")).query)
    assert loc["turkSubmitTo"] == [h.url] and loc["workerId"] == ["ABROWSER9"]
    aid = loc["assignmentId"][0]
    assert c.get_hit(HITId=hid)["HIT"]["NumberOfAssignmentsPending"] == 1
    conn.request("GET", r.getheader("Location"))
    r = conn.getresponse()
    page = r.read().decode()
    assert r.status == 200
    assert [q.question_id for q in page_questions(page)] == ["q0", "q1"]
    conn.close()
    # the page sends workerId as a form field too: like MTurk, every field but assignmentId comes back
    status, _ = _post_form(f"{h.url}/mturk/externalSubmit",
                           [("assignmentId", aid), ("q0", "no"), ("q1", "yes"), ("workerId", "ABROWSER9")])
    assert status == 200
    (a,) = c.list_assignments_for_hit(HITId=hid)["Assignments"]
    assert (a["AssignmentId"], a["WorkerId"]) == (aid, "ABROWSER9")
    assert _answers(a["Answer"]) == [("q0", "no"), ("q1", "yes"), ("workerId", "ABROWSER9")]
    assert c.get_hit(HITId=hid)["HIT"]["HITStatus"] == "Reviewable"


def test_images_are_served_from_the_directory_only(endpoint, tmp_path):
    images = tmp_path / "images"
    (images / "r0").mkdir(parents=True)
    (images / "r0" / "m1.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.txt").write_text("do not serve")
    h, _ = endpoint(images_dir=images)
    u = urlsplit(h.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)

    def get(path: str) -> tuple[int, bytes]:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()

    assert get("/images/r0/m1.png") == (200, b"\x89PNG fake")
    for path in ("/images/../secret.txt", "/images/%2e%2e/secret.txt", "/images/r0/..%2f..%2fsecret.txt",
                 "/images/%2E%2E%2Fsecret.txt", f"/images/{tmp_path}/secret.txt", "/images//etc/passwd",
                 "/images/r0/../../secret.txt", "/images/nope.png"):
        status, body = get(path)
        assert status in (403, 404), path
        assert b"do not serve" not in body and b"root:" not in body
    conn.close()


def test_throttling_is_a_botocore_throttling_error(endpoint):
    h, _ = endpoint(faults=FaultConfig(throttle_rate=1.0, seed=1))
    once = client_for(h.url, mode="standard", total_max_attempts=1)
    with pytest.raises(ClientError) as e:
        once.get_account_balance()
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # botocore's own retry handler recognises it as retryable throttling
    twice = client_for(h.url, mode="standard", total_max_attempts=2)
    with pytest.raises(ClientError) as e:
        twice.get_account_balance()
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    # faults are for API calls only
    led = json.loads(urllib.request.urlopen(h.url + "/_ledger", timeout=10).read())
    assert led["faults"]["throttle"] == 3


def test_server_faults_and_lost_responses(endpoint):
    h, _ = endpoint(faults=FaultConfig(error_rate=1.0, lost_response_share=1.0, seed=2))
    c = client_for(h.url, mode="standard", total_max_attempts=1)
    with pytest.raises(ClientError) as e:
        c.create_hit(**hit_kwargs(UniqueRequestToken="lost-1"))
    assert e.value.response["Error"]["Code"] == "ServiceFault"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 503)
    # the response was lost but the HIT exists: the token makes the retry safe
    h.local.faults = None
    h.local.fault_injector = None
    with pytest.raises(ClientError) as e:
        c.create_hit(**hit_kwargs(UniqueRequestToken="lost-1"))
    assert e.value.response["TurkErrorCode"] == "AWS.MechanicalTurk.HitAlreadyExists"
    assert c.list_hits()["NumResults"] == 1


def test_faults_are_seeded():
    from crowdprop.mturk_local.faults import FaultInjector

    def kinds(seed):
        f = FaultInjector(FaultConfig(throttle_rate=0.3, error_rate=0.2, seed=seed))
        return [None if (x := f.draw()) is None else (x.kind, x.status) for _ in range(200)]

    a = kinds(4)
    assert a == kinds(4) and a != kinds(5)
    n_throttle = sum(k is not None and k[0] == "throttle" for k in a)
    n_error = sum(k is not None and k[0] == "error" for k in a)
    assert 40 <= n_throttle <= 80 and 20 <= n_error <= 60


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["approve", "reject", "override"])),
                        min_size=1, max_size=20))
def test_money_invariant_under_any_settlement_order(endpoint, actions):
    """Whatever is approved, rejected or overridden, in any order: each assignment is charged at most once,
    and exactly the approved ones are charged reward + fee."""
    h, c = endpoint(pool=make_pool(workers=8))
    hid = c.create_hit(**hit_kwargs(MaxAssignments=6, Reward="0.35"))["HIT"]["HITId"]
    ids = [a["AssignmentId"] for a in c.list_assignments_for_hit(HITId=hid)["Assignments"]]
    for i, what in actions:
        try:
            if what == "approve":
                c.approve_assignment(AssignmentId=ids[i])
            elif what == "reject":
                c.reject_assignment(AssignmentId=ids[i], RequesterFeedback="no")
            else:
                c.approve_assignment(AssignmentId=ids[i], OverrideRejection=True)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "RequestError"
    states = [c.get_assignment(AssignmentId=a)["Assignment"]["AssignmentStatus"] for a in ids]
    n_approved = states.count("Approved")
    cents = 1_000_000 - n_approved * (35 + 7)
    assert c.get_account_balance()["AvailableBalance"] == f"{cents // 100}.{cents % 100:02d}"
    assert all(h.local.approvals(a) == (s == "Approved") for a, s in zip(ids, states))
    h.stop()
