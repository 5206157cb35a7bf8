"""The HTTP face of :class:`~crowdprop.mturk_local.service.LocalMTurk`.

Routes
------
``POST /``
    The MTurk API as boto3 speaks it (AWS JSON 1.1): header
    ``X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>``, JSON body,
    JSON answer; errors are HTTP 400 (or 5xx) with
    ``{"__type": "RequestError" | "ServiceFault" | "ThrottlingException", "Message", "TurkErrorCode"}``.
    Faults (:class:`~crowdprop.mturk_local.faults.FaultConfig`) apply here only.
``GET /hits/<HITId>?assignmentId=&workerId=&hitId=&turkSubmitTo=``
    The HIT's worker page (its HTMLQuestion's HTMLContent). Without
    ``assignmentId`` it redirects to the preview
    (``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE``); with an assignment id and a
    ``workerId`` the worker accepts the HIT under that assignment id.
``GET /hits/<HITId>/accept?workerId=W``
    Accept the HIT as worker ``W`` and redirect to its page with a fresh ``assignmentId``.
``POST /mturk/externalSubmit``
    The worker page's form (``assignmentId`` + one field per question); the
    worker is ``workerId`` from the query string (or the form), the HIT is the
    one the assignment was issued for (or ``hitId``).
``GET /images/<path>``
    Files under ``images_dir`` (nothing outside it).
``GET /_ledger``
    :meth:`LocalMTurk.ledger` as JSON.
``GET /``
    A list of HITs with links for doing them in a browser.

Example::

    with serve(LocalMTurk(truth, pool)) as h:
        mturk = boto3.client("mturk", endpoint_url=h.url, region_name="us-east-1",
                             aws_access_key_id="x", aws_secret_access_key="x")
"""
from __future__ import annotations

import html
import itertools
import json
import logging
import mimetypes
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .service import ASSIGNMENT_ID_NOT_AVAILABLE, TARGET_PREFIX, LocalMTurk, MTurkError

log = logging.getLogger(__name__)

JSON_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 8 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, local: LocalMTurk):
        self.local = local
        self.request_ids = itertools.count(1)
        super().__init__(address, handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    server_version = "crowdprop-mturk-local"

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
        rid = f"00000000-0000-4000-8000-{next(self.server.request_ids):012d}"
        self._send(status, json.dumps(obj).encode("utf-8"), JSON_TYPE if api else "application/json",
                   {"x-amzn-RequestId": rid})

    def _send_page(self, status: int, title: str, text: str) -> None:
        body = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
        self._send(status, body.encode("utf-8"), "text/html; charset=utf-8")

    def _read_body(self) -> bytes | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            self._send_page(413, "Request too large", "The request body is too large.")
            return None
        return self.rfile.read(n) if n else b""

    # ------------------------------------------------------------ routes
    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        if url.path == "/mturk/externalSubmit":
            self._external_submit(url.query, body)
        elif url.path == "/":
            self._api(body)
        else:
            self._send_page(404, "Not found", url.path)

    def do_GET(self) -> None:
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
                self._accept(path[len("/hits/"):-len("/accept")], query)
            elif path.startswith("/hits/"):
                self._hit_page(path[len("/hits/"):], query)
            elif path == "/":
                self._index()
            else:
                self._send_page(404, "Not found", path)
        except MTurkError as e:
            status = 404 if (e.turk_code or "").endswith("DoesNotExist") else 400
            self._send_page(status, "Request refused", e.message)

    do_HEAD = do_GET

    def _api(self, body: bytes) -> None:
        local = self.server.local
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
        except (ValueError, UnicodeDecodeError) as e:
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
            q = {"assignmentId": ASSIGNMENT_ID_NOT_AVAILABLE, "hitId": hit_id,
                 "turkSubmitTo": self.server.base_url}
            self._send(302, b"", "text/plain", {"Location": f"/hits/{quote(hit_id)}?{urlencode(q)}"})
            return
        if aid != ASSIGNMENT_ID_NOT_AVAILABLE and query.get("workerId"):
            # opening the page with an assignment id and a worker id accepts the HIT
            local.accept(hit_id, query["workerId"], aid)
        self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")

    def _accept(self, hit_id: str, query: dict) -> None:
        worker = query.get("workerId")
        if not worker:
            self._send_page(400, "Request refused", "Give ?workerId=... to accept a HIT.")
            return
        aid = self.server.local.accept(hit_id, worker)
        q = {"assignmentId": aid, "hitId": hit_id, "workerId": worker, "turkSubmitTo": self.server.base_url}
        self._send(302, b"", "text/plain", {"Location": f"/hits/{quote(hit_id)}?{urlencode(q)}"})

    def _external_submit(self, query: str, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" not in ctype:
            self._send_page(415, "Request refused", "Submit the form as application/x-www-form-urlencoded.")
            return
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            self._send_page(400, "Request refused", "The form is not UTF-8.")
            return
        q = dict(parse_qsl(query, keep_blank_values=True))
        form = dict(fields)
        worker = q.get("workerId") or form.get("workerId") or None
        hit_id = q.get("hitId") or form.get("hitId") or None
        try:
            aid = self.server.local.external_submit(fields, worker_id=worker, hit_id=hit_id)
        except MTurkError as e:
            self._send_page(400, "Submission refused", e.message)
            return
        self._send_page(200, "HIT submitted", f"Thank you. Assignment {aid} was submitted.")

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
            f"<td><a href='/hits/{quote(h['HITId'])}'>preview</a>"
            + (f" · <a href='/hits/{quote(h['HITId'])}/accept?workerId=ALOCALWORKER'>do it as ALOCALWORKER</a>"
               if h["HITStatus"] == "Assignable" else "") + "</td></tr>"
            for h in hits)
        body = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>local MTurk</title></head><body>"
                f"<h1>local MTurk: {len(hits)} HITs</h1><p><a href='/_ledger'>ledger</a></p>"
                f"<table><tr><th>HIT</th><th>status</th><th>annotation</th><th></th></tr>{rows}</table></body></html>")
        self._send(200, body.encode("utf-8"), "text/html; charset=utf-8")


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


def make_server(local: LocalMTurk, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """An HTTP server for ``local`` bound to ``host:port`` (0: a free port); not started."""
    return _Server((host, port), _Handler, local)


def serve(local: LocalMTurk, host: str = "127.0.0.1", port: int = 0) -> Handle:
    """Serve ``local`` from a daemon thread; returns a :class:`Handle` (use it in ``with``)."""
    server = make_server(local, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"mturk-local:{server.server_address[1]}", daemon=True)
    thread.start()
    log.info("local MTurk endpoint at %s", server.base_url)
    return Handle(server, thread)
