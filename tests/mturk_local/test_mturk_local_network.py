"""The endpoint reached over a network: the worker side (ids, GET vs POST, worker ids, sizes,
slow clients) through real HTTP, and the API side signed with SigV4 through the real boto3 client."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError

from crowdprop.mturk_local import Credentials, LocalMTurk, serve

from .conftest import TRUTH, client_for, hit_kwargs, make_pool

MTURK_ID = re.compile(r"[A-Z0-9]{30}")
TARGET = "MTurkRequesterServiceV20170117."


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, *, form: list[tuple[str, str]] | None = None, data: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) of one request; redirects are not followed."""
    hdrs = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def accept(url: str, hit_id: str, worker: str) -> str:
    """Accept ``hit_id`` as ``worker`` the way the accept button does; returns the assignment id."""
    status, headers, body = http("POST", f"{url}/hits/{hit_id}/accept", form=[("workerId", worker)])
    assert status == 303, (status, body)
    loc = urllib.parse.parse_qs(urlsplit(headers["Location"]).query)
    assert loc["workerId"] == [worker] and loc["hitId"] == [hit_id]
    return loc["assignmentId"][0]


def submit(url: str, fields: list[tuple[str, str]], query: str = "") -> int:
    return http("POST", f"{url}/mturk/externalSubmit{query}", form=fields)[0]


def manual_hit(c, qs=None, **kw) -> str:
    return c.create_hit(**hit_kwargs(qs, RequesterAnnotation="manual", **kw))["HIT"]["HITId"]


# ------------------------------------------------------------------------------------ ids
def test_ids_are_unpredictable_but_simulated_answers_are_not(endpoint):
    """Two endpoints with the same seed give the same workers the same answers under different ids."""
    (_, c1), (_, c2) = endpoint(pool=make_pool(seed=21)), endpoint(pool=make_pool(seed=21))
    qs = [(f"q{i}", 100 + i) for i in range(12)]
    runs = []
    for c in (c1, c2):
        tokened = c.create_hit(**hit_kwargs(qs, MaxAssignments=3, UniqueRequestToken="camp-r1-b0"))["HIT"]["HITId"]
        plain = c.create_hit(**hit_kwargs(qs, MaxAssignments=2))["HIT"]["HITId"]
        qual = c.create_qualification_type(Name="q", Description="d", QualificationTypeStatus="Active")
        asg = {hid: c.list_assignments_for_hit(HITId=hid)["Assignments"] for hid in (tokened, plain)}
        runs.append((tokened, plain, qual["QualificationType"]["QualificationTypeId"], asg))
    (t1, p1, q1, a1), (t2, p2, q2, a2) = runs
    ids1 = [t1, p1, q1] + [a["AssignmentId"] for x in a1.values() for a in x]
    ids2 = [t2, p2, q2] + [a["AssignmentId"] for x in a2.values() for a in x]
    assert all(MTURK_ID.fullmatch(i) for i in ids1 + ids2)
    assert not set(ids1) & set(ids2) and len(set(ids1)) == len(ids1) == 8
    # with or without a UniqueRequestToken: same workers, same answers, same times
    for (k1, k2) in ((t1, t2), (p1, p2)):
        view = [[(a["WorkerId"], a["Answer"], round((a["SubmitTime"] - a["AcceptTime"]).total_seconds(), 2))
                 for a in x[k]]
                for x, k in ((a1, k1), (a2, k2))]
        assert view[0] == view[1] and len(view[0]) == len(a1[k1])
    many = {c1.create_hit(**hit_kwargs(MaxAssignments=1))["HIT"]["HITId"] for _ in range(40)}
    assert len(many) == 40 and len({i[:6] for i in many}) > 30  # not a counter under a common prefix


def test_a_predicted_assignment_id_cannot_be_reserved(endpoint):
    """The attack: a twin endpoint with the same seed predicts the next assignment id; a GET with it
    used to accept a HIT under that id, and the simulated worker's assignment on another HIT then
    overwrote it: every later API call failed with 500."""
    h, c = endpoint(work_delay=0.3)
    twin = LocalMTurk(TRUTH, make_pool(), work_delay=0.0)
    first = manual_hit(c)
    twin.call("CreateHIT", hit_kwargs(RequesterAnnotation="manual"))
    twin_second = twin.call("CreateHIT", hit_kwargs(MaxAssignments=2))["HIT"]["HITId"]
    predicted = [a["AssignmentId"] for a in twin.call("ListAssignmentsForHIT", {"HITId": twin_second})["Assignments"]]
    assert len(predicted) == 2
    for aid in predicted:
        q = urllib.parse.urlencode({"assignmentId": aid, "workerId": "AATTACKER", "hitId": first,
                                    "turkSubmitTo": h.url})
        assert http("GET", f"{h.url}/hits/{first}?{q}")[0] == 404
        assert submit(h.url, [("assignmentId", aid), ("q0", "yes")], f"?workerId=AATTACKER&hitId={first}") == 404
    assert c.get_hit(HITId=first)["HIT"]["NumberOfAssignmentsPending"] == 0
    second = c.create_hit(**hit_kwargs(MaxAssignments=2))["HIT"]["HITId"]
    time.sleep(0.4)
    got = c.list_assignments_for_hit(HITId=second)["Assignments"]
    assert len(got) == 2 and {a["HITId"] for a in got} == {second}
    assert not {a["AssignmentId"] for a in got} & set(predicted)
    assert c.list_assignments_for_hit(HITId=first)["NumResults"] == 0
    assert c.get_account_balance()["AvailableBalance"] == "10000.00"


# ------------------------------------------------------------------------------------ GET vs POST
def test_get_requests_change_nothing_and_accepting_is_a_post(endpoint):
    h, c = endpoint(simulate=False)
    hid = manual_hit(c)

    def pending_available():
        x = c.get_hit(HITId=hid)["HIT"]
        return x["NumberOfAssignmentsPending"], x["NumberOfAssignmentsAvailable"]

    made_up = "3" + "A" * 29
    for method, path in [("GET", "/"), ("GET", f"/hits/{hid}"), ("HEAD", f"/hits/{hid}/accept?workerId=AW1"),
                         ("GET", f"/hits/{hid}/accept?workerId=AW1"),
                         ("GET", f"/hits/{hid}?assignmentId={made_up}&workerId=AW1&hitId={hid}"),
                         ("GET", "/_ledger")]:
        status, _, body = http(method, h.url + path)
        assert status in (200, 302, 404), (method, path, status)
    assert pending_available() == (0, 1)
    # the accept page is a form that POSTs; the index offers the same form
    status, _, page = http("GET", f"{h.url}/hits/{hid}/accept?workerId=AW1")
    assert status == 200 and re.search(rf"<form[^>]*method=.post.[^>]*action=./hits/{hid}/accept.", page)
    assert 'name="workerId"' in page and 'value="AW1"' in page
    index = http("GET", h.url + "/")[2]
    assert re.search(rf"<form[^>]*method=.post.[^>]*action=./hits/{hid}/accept.", index)
    aid = accept(h.url, hid, "AW1")
    assert MTURK_ID.fullmatch(aid) and pending_available() == (1, 0)
    # the worker's own page opens with their assignment; someone else's worker id is refused
    q = {"assignmentId": aid, "hitId": hid, "turkSubmitTo": h.url}
    assert http("GET", f"{h.url}/hits/{hid}?" + urllib.parse.urlencode({**q, "workerId": "AW1"}))[0] == 200
    assert http("GET", f"{h.url}/hits/{hid}?" + urllib.parse.urlencode({**q, "workerId": "AW2"}))[0] == 403
    assert http("GET", f"{h.url}/hits/{hid}?" + urllib.parse.urlencode(q))[0] == 403
    # accepting again does not hand out the held assignment (that would give its id to anyone)
    status, _, body = http("POST", f"{h.url}/hits/{hid}/accept", form=[("workerId", "AW1")])
    assert status in (400, 403) and aid not in body


# ------------------------------------------------------------------------------------ worker ids
def test_only_the_assignments_worker_can_submit_it(endpoint):
    h, c = endpoint(simulate=False)
    hid = manual_hit(c, MaxAssignments=2)
    aid = h.local.accept(hid, "AWORKERA")  # as the accept button does (test_get_requests_... goes through it)
    answers = [("q0", "yes"), ("q1", "no")]
    refused = [
        ([("assignmentId", aid), *answers], ""),  # B leaves workerId out
        ([("assignmentId", aid), *answers, ("workerId", "AWORKERB")], ""),
        ([("assignmentId", aid), *answers], "?workerId=AWORKERB"),
        ([("assignmentId", aid), *answers, ("workerId", "AWORKERB")], "?workerId=AWORKERA"),  # two claims
        ([("assignmentId", aid), *answers, ("workerId", "AWORKERA")], "?workerId=AWORKERA&hitId=3" + "B" * 29),
    ]
    for fields, query in refused:
        assert submit(h.url, fields, query) in (400, 403, 404), (fields, query)
    assert c.get_hit(HITId=hid)["HIT"]["NumberOfAssignmentsPending"] == 1
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 0
    assert submit(h.url, [("assignmentId", aid), *answers, ("workerId", "AWORKERA")]) == 200
    (a,) = c.list_assignments_for_hit(HITId=hid)["Assignments"]
    assert (a["AssignmentId"], a["WorkerId"], a["AssignmentStatus"]) == (aid, "AWORKERA", "Submitted")
    assert "<FreeText>no</FreeText>" in a["Answer"]
    # an assignment id nobody issued is not a way to make one
    assert submit(h.url, [("assignmentId", "3" + "C" * 29), *answers], f"?workerId=AWORKERB&hitId={hid}") == 404
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 1


def test_worker_ids_are_mturk_worker_ids_and_can_be_blocked(endpoint):
    from crowdprop.mturk_local import MTurkError

    h, c = endpoint(simulate=False)
    hid = manual_hit(c, MaxAssignments=3)
    with pytest.raises(MTurkError):
        h.local.accept(hid, "A" + "X" * 2999)  # CreateWorkerBlock takes at most 64 characters
    for bad in ("A" + "X" * 2999, "A" + "X" * 64, "aworker", "A<script>", "BWORKER", "A", ""):
        status, _, body = http("POST", f"{h.url}/hits/{hid}/accept", form=[("workerId", bad)])
        assert status == 400, bad
        assert "X" * 64 not in body  # the refusal does not echo the id (the longest bad ones hold 64 and 2999 X)
        assert len(body) < 4000  # the styled error page, not a 3000-character id in it
    assert c.get_hit(HITId=hid)["HIT"]["NumberOfAssignmentsPending"] == 0
    longest = "A" + "Z" * 63
    aid = accept(h.url, hid, longest)
    assert submit(h.url, [("assignmentId", aid), ("q0", "yes"), ("workerId", longest)]) == 200
    c.create_worker_block(WorkerId=longest, Reason="test")
    assert [b["WorkerId"] for b in c.list_worker_blocks()["WorkerBlocks"]] == [longest]
    other = manual_hit(c)
    assert http("POST", f"{h.url}/hits/{other}/accept", form=[("workerId", longest)])[0] == 403


def test_worker_forms_are_bounded(endpoint):
    from crowdprop.mturk_local.server import MAX_FORM_BYTES, MAX_FORM_FIELDS

    h, c = endpoint(simulate=False)
    hid = manual_hit(c)
    aid = accept(h.url, hid, "AWORKERA")
    base = [("assignmentId", aid), ("workerId", "AWORKERA")]
    big = base + [("q0", "y" * MAX_FORM_BYTES)]
    assert submit(h.url, big) == 413
    many = base + [(f"f{i}", "1") for i in range(MAX_FORM_FIELDS + 1)]
    assert len(urllib.parse.urlencode(many)) < MAX_FORM_BYTES
    assert submit(h.url, many) == 413
    # a body shorter than its Content-Length is not taken as the whole form
    u = urlsplit(h.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        body = urllib.parse.urlencode(base + [("q0", "yes")]).encode()
        s.sendall(b"POST /mturk/externalSubmit HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                  b"\r\nContent-Length: " + str(len(body) + 50).encode() + b"\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        s.recv(4096)
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 0
    assert submit(h.url, base + [("q0", "yes")]) == 200


# ------------------------------------------------------------------------------------ timeouts
def test_a_slow_client_is_cut_off_and_others_are_served(endpoint):
    local = LocalMTurk(TRUTH, make_pool())
    with serve(local, request_timeout_s=1.0) as h:
        u = urlsplit(h.url)
        slow = socket.create_connection((u.hostname, u.port), timeout=10)
        silent = socket.create_connection((u.hostname, u.port), timeout=10)
        silent.sendall(b"GET /_led")  # half a request line, then nothing
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: " + TARGET.encode() + b"GetAccountBalance\r\n"
                     b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 1000\r\n\r\n")
        t0 = time.monotonic()
        closed_after = None
        try:
            while time.monotonic() - t0 < 6:
                slow.sendall(b" ")  # one byte every 0.1 s: never idle, never done
                if closed_after is None:
                    assert client_for(h.url).get_account_balance()["AvailableBalance"] == "10000.00"
                time.sleep(0.1)
        except OSError:
            closed_after = time.monotonic() - t0
        assert closed_after is not None and closed_after < 4.0
        silent.settimeout(5)
        assert silent.recv(100) == b""  # closed without an answer
        slow.close()
        silent.close()
        # a client that is merely slow to send a whole request in time is served
        assert client_for(h.url).get_account_balance()["AvailableBalance"] == "10000.00"


# ------------------------------------------------------------------------------------ SigV4
KEY = Credentials("LOCALTESTKEY00000001", "localTestSecret/000000000000000000000001")


def signed_client(url: str, key: str, secret: str):
    cfg = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
    return boto3.client("mturk", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=cfg)


def sign(url: str, operation: str, body: bytes, *, key=KEY, when: datetime | None = None,
         headers: dict | None = None) -> dict:
    """The headers of a request signed with botocore's SigV4Auth (optionally at another time)."""
    req = AWSRequest(method="POST", url=url + "/", data=body,
                     headers={"X-Amz-Target": TARGET + operation, "Content-Type": "application/x-amz-json-1.1",
                              **(headers or {})})
    auth = SigV4Auth(BotoCredentials(key.access_key_id, key.secret_access_key), "mturk-requester", "us-east-1")
    if when is None:
        auth.add_auth(req)
    else:
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        req.context["timestamp"] = stamp
        req.headers["X-Amz-Date"] = stamp
        sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        auth._inject_signature_to_request(req, sig)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in req.headers.items()}


def error(status_headers_body) -> tuple[int, str]:
    status, _, body = status_headers_body
    return status, json.loads(body)["__type"]


def test_a_signed_endpoint_takes_its_key_and_refuses_the_rest(endpoint):
    local = LocalMTurk(TRUTH, make_pool())
    with serve(local, credentials=KEY) as h:
        good = signed_client(h.url, KEY.access_key_id, KEY.secret_access_key)
        hid = good.create_hit(**hit_kwargs(UniqueRequestToken="signed-1"))["HIT"]["HITId"]
        assert good.list_assignments_for_hit(HITId=hid)["NumResults"] == 1
        for key, secret, code in ((KEY.access_key_id, "wrong", "InvalidSignatureException"),
                                  ("LOCALOTHERKEY0000001", KEY.secret_access_key, "UnrecognizedClientException")):
            with pytest.raises(ClientError) as e:
                signed_client(h.url, key, secret).create_hit(**hit_kwargs(UniqueRequestToken="signed-2"))
            assert e.value.response["Error"]["Code"] == code
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

        body = json.dumps(hit_kwargs(UniqueRequestToken="signed-3")).encode()
        unsigned = {"X-Amz-Target": TARGET + "CreateHIT", "Content-Type": "application/x-amz-json-1.1"}
        assert error(http("POST", h.url + "/", data=body, headers=unsigned)) == \
            (400, "MissingAuthenticationTokenException")
        headers = sign(h.url, "CreateHIT", body)
        # the same signature on another body, another operation, or ten minutes later
        other = json.dumps(hit_kwargs(UniqueRequestToken="signed-4", Reward="9.00")).encode()
        assert error(http("POST", h.url + "/", data=other, headers=headers)) == (403, "InvalidSignatureException")
        assert error(http("POST", h.url + "/", data=body, headers={**headers, "X-Amz-Target": TARGET + "DeleteHIT"})) \
            == (403, "InvalidSignatureException")
        old = sign(h.url, "CreateHIT", body, when=datetime.now(timezone.utc) - timedelta(minutes=10))
        assert error(http("POST", h.url + "/", data=body, headers=old)) == (403, "InvalidSignatureException")
        # a payload hash header that is not the body's
        lie = sign(h.url, "CreateHIT", other, headers={"X-Amz-Content-SHA256": hashlib.sha256(other).hexdigest()})
        assert error(http("POST", h.url + "/", data=body, headers=lie)) == (403, "InvalidSignatureException")
        # the operation must be signed
        auth = headers["Authorization"].replace("x-amz-date;x-amz-target", "x-amz-date")
        assert error(http("POST", h.url + "/", data=body, headers={**headers, "Authorization": auth}))[0] in (400, 403)
        assert error(http("POST", h.url + "/", data=body, headers={**headers, "Authorization": "AWS4-HMAC-SHA256 x"})) \
            == (400, "IncompleteSignatureException")
        # none of these reached the service; the properly signed request does, once
        assert local.ledger()["hits_created"] == 1
        assert http("POST", h.url + "/", data=body, headers=headers)[0] == 200
        assert local.ledger()["hits_created"] == 2
        # the worker side needs no signature
        assert http("GET", h.url + "/")[0] == 200 and http("GET", f"{h.url}/hits/{hid}")[0] == 302


def test_beyond_loopback_a_key_is_required():
    local = LocalMTurk(TRUTH, make_pool())
    with pytest.raises(ValueError, match="credentials"):
        serve(local, host="0.0.0.0")
    # on loopback, without a key, unsigned calls work as before
    with serve(local) as h:
        body = b"{}"
        status, _, text = http("POST", h.url + "/", data=body, headers={"X-Amz-Target": TARGET + "GetAccountBalance",
                                                                       "Content-Type": "application/x-amz-json-1.1"})
        assert status == 200 and json.loads(text) == {"AvailableBalance": "10000.00"}


def _command(tmp_path, *extra, env=None):
    from .test_mturk_local_command import _run_dir

    run = _run_dir(tmp_path, correct_iou=0.5, workers=4)
    return subprocess.Popen([sys.executable, "-m", "crowdprop", "mturk-local", "--run-dir", str(run), "--port", "0",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _head(proc) -> list[str]:
    """The lines the command prints at start (they end with the one naming the ledger)."""
    lines = []
    while not lines or "ledger:" not in lines[-1]:
        lines.append(proc.stdout.readline())
        assert lines[-1], lines  # the command exited
    return lines


def _stop(proc) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=120)
    return out


def test_the_command_on_all_interfaces_prints_a_key_once_and_checks_it(tmp_path):
    proc = _command(tmp_path, "--host", "0.0.0.0")
    try:
        head = _head(proc)
        assert head[0].startswith("local MTurk endpoint: http://0.0.0.0:"), head
        port = int(head[0].rsplit(":", 1)[1])
        key_line = next((x for x in head if "AWS_SECRET_ACCESS_KEY=" in x), "")
        key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", key_line).group(1)
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", key_line).group(1)
        assert re.fullmatch(r"[A-Z0-9]{20}", key) and len(secret) >= 40
        url = f"http://127.0.0.1:{port}"
        hid = signed_client(url, key, secret).create_hit(**hit_kwargs(UniqueRequestToken="cli-1"))["HIT"]["HITId"]
        with pytest.raises(ClientError) as e:
            client_for(url).get_hit(HITId=hid)
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    finally:
        rest = _stop(proc)
    assert "stopped: 1 HITs" in rest and secret not in rest  # printed once, in the lines read above
    assert sum(secret in x for x in head) == 1

    # a pair given in the environment: the secret is not printed; loopback with --require-signature
    env = {"CROWDPROP_MTURK_LOCAL_ACCESS_KEY_ID": KEY.access_key_id,
           "CROWDPROP_MTURK_LOCAL_SECRET_ACCESS_KEY": KEY.secret_access_key}
    proc = _command(tmp_path / "b", "--require-signature", env=env)
    try:
        head = _head(proc)
        url = head[0].split(": ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert signed_client(url, KEY.access_key_id, KEY.secret_access_key).get_account_balance()
        with pytest.raises(ClientError) as e:
            client_for(url).get_account_balance()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        rest = _stop(proc)
    out = "".join(head) + rest
    assert KEY.access_key_id in out and KEY.secret_access_key not in out and "stopped: 0 HITs" in out


def test_the_command_refuses_half_a_key_pair(tmp_path, capsys, monkeypatch):
    from crowdprop.cli import main

    from .test_mturk_local_command import _run_dir

    monkeypatch.setenv("CROWDPROP_MTURK_LOCAL_ACCESS_KEY_ID", "LOCALKEYONLY00000001")
    monkeypatch.delenv("CROWDPROP_MTURK_LOCAL_SECRET_ACCESS_KEY", raising=False)
    assert main(["mturk-local", "--run-dir", str(_run_dir(tmp_path)), "--require-signature"]) == 2
    err = capsys.readouterr().err
    assert "CROWDPROP_MTURK_LOCAL_SECRET_ACCESS_KEY" in err and len(err.strip().splitlines()) == 1
