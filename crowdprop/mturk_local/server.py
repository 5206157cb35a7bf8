"""The HTTP face of :class:`~crowdprop.mturk_local.service.LocalMTurk`.

Routes
------
``POST /``
    The MTurk API as boto3 speaks it (AWS JSON 1.1): header
    ``X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>``, JSON body,
    JSON answer; errors are HTTP 400 (or 5xx) with
    ``{"__type": "RequestError" | "ServiceFault" | "ThrottlingException", "Message", "TurkErrorCode"}``.
    With ``credentials`` (required when the endpoint listens beyond loopback)
    every call must be SigV4-signed with that key pair (:mod:`.auth`).
    Faults (:class:`~crowdprop.mturk_local.faults.FaultConfig`) apply here only.
``GET /hits/<HITId>?assignmentId=&workerId=&hitId=&turkSubmitTo=``
    The HIT's worker page (its HTMLQuestion's HTMLContent). Without
    ``assignmentId`` it redirects to the preview
    (``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE``); otherwise the assignment
    must be one that ``workerId`` accepted on this HIT (403 if not).
``GET /hits/<HITId>/accept?workerId=W``
    A page with the accept button (a form that POSTs the next route).
``POST /hits/<HITId>/accept`` (form field ``workerId``)
    Accept the HIT as worker ``W`` (an MTurk worker id, ``^A[A-Z0-9]{1,63}$``);
    303 to its page with a new, random ``assignmentId``.
``POST /mturk/externalSubmit``
    The worker page's form (``assignmentId`` + one field per question). The
    assignment must have been accepted, and ``workerId`` (the query string's or
    the form's; every one given must agree) must be its worker.
``GET /qualifications/<QualificationTypeId>?workerId=W``
    A qualification type's Test as a form; ``POST`` it (``workerId`` and one
    field per question) to take the test, once, graded with its AnswerKey.
``GET /images/<path>``
    Files under ``images_dir`` (nothing outside it).
``GET /_ledger``
    :meth:`LocalMTurk.ledger` as JSON.
``GET /``
    A list of HITs with forms for doing them in a browser.

GET and HEAD never change anything (work that time has made due is brought up
to date, as on every request). Bodies are bounded (:data:`MAX_BODY`,
:data:`MAX_FORM_BYTES`, :data:`MAX_FORM_FIELDS`), and a request must arrive
whole within ``request_timeout_s`` of its first byte (of the connection being
idle) or the connection is closed without an answer.

Example::

    with serve(LocalMTurk(truth, pool)) as h:
        mturk = boto3.client("mturk", endpoint_url=h.url, region_name="us-east-1",
                             aws_access_key_id="x", aws_secret_access_key="x")
"""
from __future__ import annotations

import html
import ipaddress
import json
import logging
import mimetypes
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from . import auth
from .auth import Credentials
from .pages import site_page
from .service import ASSIGNMENT_ID_NOT_AVAILABLE, TARGET_PREFIX, LocalMTurk, MTurkError

log = logging.getLogger(__name__)

JSON_TYPE = "application/x-amz-json-1.1"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY = 1024 * 1024
"""An API request body (a Question, a Test and an AnswerKey are at most 64 KB each)."""
MAX_FORM_BYTES = 256 * 1024
"""A worker's form (500 yes/no questions take about 20 KB)."""
MAX_FORM_FIELDS = 2000
DEFAULT_REQUEST_TIMEOUT_S = 30.0
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is only ever this machine."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addrs = {str(info[4][0]).split("%", 1)[0] for info in infos}  # IPv4/IPv6 socket addresses: a str host first
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, local: LocalMTurk, *, credentials: Credentials | None,
                 request_timeout_s: float):
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        self.local = local
        self.credentials = credentials
        self.request_timeout_s = float(request_timeout_s)
        self._deadlines: dict[_Handler, float] = {}
        self._deadlines_lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(address, handler)
        host = self.host
        if credentials is None and not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            self.server_close()
            raise ValueError(f"an endpoint listening on {host} (beyond loopback) needs credentials: its API calls "
                             "must be signed with a key pair it knows")
        self._reaper = threading.Thread(target=self._reap, name="mturk-local-timeouts", daemon=True)
        self._reaper.start()

    @property
    def host(self) -> str:
        """The address listened on (a TCP server's is a str; socketserver types it for every family)."""
        return str(self.server_address[0])

    @property
    def base_url(self) -> str:
        host, port = self.host, self.server_address[1]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    # A request must arrive whole within request_timeout_s: one thread closes the connections that overstay.
    def arm(self, handler: "_Handler") -> None:
        with self._deadlines_lock:
            self._deadlines[handler] = time.monotonic() + self.request_timeout_s

    def disarm(self, handler: "_Handler") -> None:
        with self._deadlines_lock:
            self._deadlines.pop(handler, None)

    def _reap(self) -> None:
        tick = min(0.25, self.request_timeout_s / 4)
        while not self._closing.wait(tick):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [h for h, d in self._deadlines.items() if d <= now]
                for h in late:
                    del self._deadlines[h]
            for h in late:
                h.timed_out = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                log.debug("local MTurk: %s did not send a whole request within %.0f s; connection closed",
                          h.client_address[0], self.request_timeout_s)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    server_version = "crowdprop-mturk-local"
    timed_out = False
    raw_requestline: bytes
    """Set by BaseHTTPRequestHandler.handle_one_request (typeshed does not declare it)."""

    def setup(self) -> None:
        # also the socket's timeout: idle reads and stuck writes. typeshed declares StreamRequestHandler.timeout a
        # ClassVar, but setup() reads self.timeout, so a per-instance value (this server's) is what it uses.
        self.timeout = self.server.request_timeout_s  # type: ignore[misc]
        super().setup()

    def handle_one_request(self) -> None:
        self.server.arm(self)
        try:
            super().handle_one_request()
        finally:
            self.server.disarm(self)

    def parse_request(self) -> bool:
        # a request line cut short (the connection closed or timed out mid-line) is no request
        if not self.raw_requestline.endswith(b"\n"):
            self.close_connection = True
            return False
        ok = super().parse_request()
        if self.timed_out:
            self.close_connection = True
            return False
        return ok

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: dict, *, api: bool = True) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), JSON_TYPE if api else "application/json",
                   {"x-amzn-RequestId": str(uuid.uuid4())})

    def _send_page(self, status: int, title: str, text: str) -> None:
        self._send_html(status, title, f"<p>{html.escape(text)}</p>")

    def _send_html(self, status: int, title: str, inner: str) -> None:
        body = site_page(title, inner, status=status)  # styled like the worker page
        self._send(status, body.encode("utf-8"), "text/html; charset=utf-8")

    def _refuse(self, e: MTurkError, title: str = "Request refused") -> None:
        code = e.turk_code or ""
        status = 404 if code.endswith("DoesNotExist") else 403 if code.endswith("PermissionDenied") else 400
        self._send_page(status, title, e.message)

    def _self_url(self) -> str:
        """This endpoint's URL as the client reached it (its Host header), for turkSubmitTo."""
        host = self.headers.get("Host", "")
        return f"http://{host}" if len(host) <= 255 and _HOST.match(host) else self.server.base_url

    def _read_body(self, limit: int) -> bytes | None:
        """The body, whole; None (after answering, or with the connection closed) otherwise."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send_page(411, "Length required", "Send the body with a Content-Length.")
            return None
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > limit:
            self.close_connection = True
            self._send_page(413, "Request too large", f"The request body is over {limit} bytes.")
            return None
        body = self.rfile.read(n) if n else b""
        if len(body) != n or self.timed_out:  # the client went away or took too long
            self.close_connection = True
            return None
        self.server.disarm(self)
        return body

    def _form(self, body: bytes) -> list[tuple[str, str]] | None:
        if FORM_TYPE not in self.headers.get("Content-Type", ""):
            self._send_page(415, "Request refused", f"Submit the form as {FORM_TYPE}.")
            return None
        try:
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except UnicodeDecodeError:
            self._send_page(400, "Request refused", "The form is not UTF-8.")
        except ValueError:
            self._send_page(413, "Request too large", f"The form has over {MAX_FORM_FIELDS} fields.")
        return None

    # ------------------------------------------------------------ routes
    def do_POST(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        api = url.path == "/"
        body = self._read_body(MAX_BODY if api else MAX_FORM_BYTES)
        if body is None:
            return
        if api:
            self._api(body)
            return
        if path.startswith("/qualifications/"):
            fields = self._form(body)
            if fields is not None:
                try:
                    self._take_test(path[len("/qualifications/"):], fields)
                except MTurkError as e:
                    self._refuse(e)
            return
        if path == "/mturk/externalSubmit" or (path.startswith("/hits/") and path.endswith("/accept")):
            fields = self._form(body)
            if fields is None:
                return
            query = parse_qsl(url.query, keep_blank_values=True)
            try:
                if path == "/mturk/externalSubmit":
                    self._external_submit(query, fields)
                else:
                    self._accept(path[len("/hits/"):-len("/accept")], query, fields)
            except MTurkError as e:
                self._refuse(e)
        else:
            self._send_page(404, "Not found", path)

    def do_GET(self) -> None:
        self.server.disarm(self)
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        local = self.server.local
        try:
            if path == "/_ledger":
                self._send_json(200, local.ledger(), api=False)
            elif path.startswith("/images/"):
                self._image(url.path[len("/images/"):])
            elif path.startswith("/hits/") and path.endswith("/accept"):
                self._accept_page(path[len("/hits/"):-len("/accept")], query)
            elif path.startswith("/hits/"):
                self._hit_page(path[len("/hits/"):], query)
            elif path.startswith("/qualifications/"):
                self._test_form(path[len("/qualifications/"):], query)
            elif path == "/":
                self._index()
            else:
                self._send_page(404, "Not found", path)
        except MTurkError as e:
            self._refuse(e)

    do_HEAD = do_GET

    def _api(self, body: bytes) -> None:
        local = self.server.local
        if self.server.credentials is not None:
            try:
                auth.check(self.server.credentials, method=self.command, path=self.path, headers=self.headers,
                           body=body)
            except auth.AuthError as e:
                log.info("local MTurk: refused an API call from %s: %s", self.client_address[0], e.type)
                self._send_json(e.status, e.body())
                return
        target = self.headers.get("X-Amz-Target", "")
        prefix, _, operation = target.partition(".")
        if prefix != TARGET_PREFIX or not operation:
            self._send_json(400, {"__type": "UnknownOperationException",
                                  "Message": f"Unknown target '{target}'."})
            return
        fault = local.fault_injector.draw() if local.fault_injector is not None else None
        if local.faults is not None and local.faults.latency_s > 0:
            time.sleep(local.faults.latency_s)
        if fault is not None and fault.kind == "throttle":
            self._send_json(400, {"__type": "ThrottlingException", "Message": "Rate exceeded"})
            return
        if fault is not None and not fault.after:
            self._send_json(fault.status, {"__type": "ServiceFault", "Message": "Service is unavailable, try again.",
                                           "TurkErrorCode": "AWS.ServiceUnavailable"})
            return
        try:
            params = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(params, dict):
                raise ValueError("expected a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self._send_json(400, {"__type": "SerializationException", "Message": f"Malformed request body: {e}"})
            return
        try:
            result = local.call(operation, params)
        except MTurkError as e:
            self._send_json(e.status, e.body())
            return
        except Exception as e:  # a bug here must look like MTurk's 500, not kill the connection
            log.exception("local MTurk: %s failed", operation)
            self._send_json(500, {"__type": "ServiceFault", "Message": f"Internal error: {e}",
                                  "TurkErrorCode": "AWS.InternalError"})
            return
        if fault is not None:  # the operation took effect, the response is lost
            self._send_json(fault.status, {"__type": "ServiceFault", "Message": "Service is unavailable, try again.",
                                           "TurkErrorCode": "AWS.ServiceUnavailable"})
            return
        self._send_json(200, result)

    def _hit_page(self, hit_id: str, query: dict) -> None:
        local = self.server.local
        page = local.hit_page(hit_id)  # 404-ish MTurkError if unknown
        aid = query.get("assignmentId")
        if not aid:
            q = {"assignmentId": ASSIGNMENT_ID_NOT_AVAILABLE, "hitId": hit_id, "turkSubmitTo": self._self_url()}
            self._send(302, b"", "text/plain", {"Location": f"/hits/{quote(hit_id)}?{urlencode(q)}"})
            return
        if aid != ASSIGNMENT_ID_NOT_AVAILABLE:
            local.check_holder(aid, query.get("workerId") or None, hit_id)  # 403 unless it is this worker's
        self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")

    @staticmethod
    def _accept_form(hit_id: str, worker: str, button_id: str = "") -> str:
        bid = f" id='{button_id}'" if button_id else ""
        return (f"<form method='post' action='/hits/{html.escape(quote(hit_id))}/accept'>"
                f"<label>worker id <input name=\"workerId\" value=\"{html.escape(worker)}\" required "
                f"pattern='A[A-Z0-9]{{1,63}}' size='20'></label> <button type='submit'{bid}>Accept</button></form>")

    def _accept_page(self, hit_id: str, query: dict) -> None:
        self.server.local.hit_page(hit_id)  # 404-ish MTurkError if unknown
        worker = query.get("workerId", "")[:64]
        self._send_html(200, f"Accept HIT {hit_id}",
                        f"<p><a href='/hits/{html.escape(quote(hit_id))}'>preview</a></p>"
                        + self._accept_form(hit_id, worker, "cp-accept"))

    @staticmethod
    def _one(name: str, *sources: list[tuple[str, str]]) -> str | None:
        """The one value of field ``name`` over the query and the form (a refusal if they disagree)."""
        values = {v for src in sources for k, v in src if k == name and v}
        if len(values) > 1:
            raise MTurkError(f"The request gives {len(values)} different {name} values.",
                             "AWS.MechanicalTurk.PermissionDenied")
        return values.pop() if values else None

    def _accept(self, hit_id: str, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        worker = self._one("workerId", query, form)
        if not worker:
            self._send_page(400, "Request refused", "Give the form field workerId to accept a HIT.")
            return
        aid = self.server.local.accept(hit_id, worker)
        q = {"assignmentId": aid, "hitId": hit_id, "workerId": worker, "turkSubmitTo": self._self_url()}
        self._send(303, b"", "text/plain", {"Location": f"/hits/{quote(hit_id)}?{urlencode(q)}"})

    def _external_submit(self, query: list[tuple[str, str]], fields: list[tuple[str, str]]) -> None:
        worker = self._one("workerId", query, fields)
        hit_id = self._one("hitId", query, fields)
        aid = self.server.local.external_submit(fields, worker_id=worker, hit_id=hit_id)
        self._send_page(200, "HIT submitted", f"Thank you. Assignment {aid} was submitted.")

    def _test_form(self, qt_id: str, query: dict) -> None:
        """A qualification type's Test as a form a person can take (once), graded by its AnswerKey."""
        name, title, intro, items = self.server.local.test_page(qt_id)
        worker = query.get("workerId", "ALOCALWORKER")[:64]
        parts = [f"<p>{html.escape(intro)}</p>" if intro else "",
                 f"<form method='post' action='/qualifications/{html.escape(quote(qt_id))}'>"
                 f"<p><label>worker id <input name='workerId' value=\"{html.escape(worker)}\" required "
                 "pattern='A[A-Z0-9]{1,63}' size='20'></label></p>"]
        for k, it in enumerate(items, start=1):
            parts.append(f"<fieldset data-question-id=\"{html.escape(it.identifier)}\"><legend>Question {k}</legend>")
            parts += [f"<p>{html.escape(t)}</p>" for t in it.texts]
            parts += [f"<p><img src=\"{html.escape(u)}\" alt=\"{html.escape(alt)}\" style='max-width:100%'></p>"
                      for u, alt in it.images]
            parts += [f"<label><input type='radio' name=\"{html.escape(it.identifier)}\" value=\"{html.escape(sid)}\" "
                      f"required> {html.escape(label)}</label> " for sid, label in it.selections]
            parts.append("</fieldset>")
        parts.append("<p><button type='submit' id='cp-submit-test'>Submit the test</button></p></form>")
        self._send_html(200, title or name, "".join(parts))

    def _take_test(self, qt_id: str, fields: list[tuple[str, str]]) -> None:
        worker = self._one("workerId", fields)
        if not worker:
            self._send_page(400, "Request refused", "Give the form field workerId to take the test.")
            return
        answers = {k: v for k, v in fields if k != "workerId"}
        value = self.server.local.take_test(qt_id, worker, answers)
        text = ("The test waits for the requester's review." if value is None else
                f"Worker {worker} scored {value}. HITs that require this qualification accept you when the score "
                "meets their minimum.")
        self._send_html(200, "Test submitted", f"<p id='cp-score'>{html.escape(text)}</p><p><a href='/'>HITs</a></p>")

    def _image(self, rel: str) -> None:
        root = self.server.local.images_dir
        rel = unquote(rel)
        if root is None or not rel or "\x00" in rel:
            self._send_page(404, "Not found", "No such image.")
            return
        base = root.resolve()
        target = (base / rel).resolve()
        if not target.is_relative_to(base) or ".." in Path(rel).parts or Path(rel).is_absolute():
            self._send_page(403, "Forbidden", "Images are served from the images directory only.")
            return
        if not target.is_file():
            self._send_page(404, "Not found", "No such image.")
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(200, target.read_bytes(), ctype, {"Cache-Control": "max-age=3600"})

    def _index(self) -> None:
        local = self.server.local
        hits = []
        token = None
        while True:
            page = local.call("ListHITs", {"MaxResults": 100, **({"NextToken": token} if token else {})})
            hits += page["HITs"]
            token = page.get("NextToken")
            if not token:
                break
        rows = "".join(
            f"<tr><td>{html.escape(h['HITId'])}</td><td>{html.escape(h['HITStatus'])}</td>"
            f"<td>{html.escape(h.get('RequesterAnnotation', ''))}</td>"
            f"<td><a href='/hits/{html.escape(quote(h['HITId']))}'>preview</a></td><td>"
            + (self._accept_form(h["HITId"], "ALOCALWORKER") if h["HITStatus"] == "Assignable" else "")
            + "</td></tr>"
            for h in hits)
        tests = "".join(f"<li><a href='/qualifications/{html.escape(quote(t['QualificationTypeId']))}'>"
                        f"{html.escape(t['Name'])}</a></li>" for t in local.tests())
        tests = (f"<p>Qualification tests (take them before HITs that require them):</p><ul>{tests}</ul>"
                 if tests else "")
        self._send_html(200, f"local MTurk: {len(hits)} HITs",
                        f"<p><a href='/_ledger'>ledger</a></p>{tests}<table><tr><th>HIT</th><th>status</th>"
                        f"<th>annotation</th><th></th><th>do it as</th></tr>{rows}</table>")


class Handle:
    """A running endpoint: ``.url``, ``.local``, ``.stop()``; a context manager."""

    def __init__(self, server: _Server, thread: threading.Thread):
        self._server = server
        self._thread = thread
        self.local = server.local
        self.url = server.base_url

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def make_server(local: LocalMTurk, host: str = "127.0.0.1", port: int = 0, *,
                credentials: Credentials | None = None,
                request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> _Server:
    """An HTTP server for ``local`` bound to ``host:port`` (0: a free port); not started.

    ``credentials``: API calls must be SigV4-signed with this key pair; required
    (ValueError) when the bound address is not a loopback address.
    ``request_timeout_s``: how long a client may take to send one whole request.
    """
    return _Server((host, port), _Handler, local, credentials=credentials, request_timeout_s=request_timeout_s)


def serve(local: LocalMTurk, host: str = "127.0.0.1", port: int = 0, *, credentials: Credentials | None = None,
          request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> Handle:
    """Serve ``local`` from a daemon thread; returns a :class:`Handle` (use it in ``with``).

    See :func:`make_server` for ``credentials`` and ``request_timeout_s``."""
    server = make_server(local, host, port, credentials=credentials, request_timeout_s=request_timeout_s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"mturk-local:{server.server_address[1]}", daemon=True)
    thread.start()
    log.info("local MTurk endpoint at %s%s", server.base_url, " (signed API calls only)" if credentials else "")
    return Handle(server, thread)
