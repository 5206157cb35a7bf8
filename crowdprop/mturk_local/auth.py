"""SigV4 signatures on the local endpoint's API calls, checked against the endpoint's own key pair.

boto3 signs every MTurk call with AWS Signature Version 4: an ``Authorization``
header ``AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/mturk-requester/aws4_request,
SignedHeaders=..., Signature=...`` and an ``X-Amz-Date`` header. :func:`check`
recomputes the signature of the request as received with botocore's own
:class:`botocore.auth.SigV4Auth` and the endpoint's secret, and compares the two
with :func:`hmac.compare_digest`.

Refusals are AWS JSON errors (``__type`` is what botocore reports as the error code):

=====================================  ======  ==========================================
``MissingAuthenticationTokenException``  400    no ``Authorization`` header
``IncompleteSignatureException``         400    a header that is not a SigV4 signature
``UnrecognizedClientException``          403    another access key id
``InvalidSignatureException``            403    wrong signature, unsigned operation or host,
                                                 a payload hash that is not the body's,
                                                 a time more than 5 minutes off
=====================================  ======  ==========================================
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from email.message import Message

SERVICE = "mturk-requester"
"""botocore's signing name of the ``mturk`` client."""
MAX_SKEW_S = 300
"""A signature is good for five minutes either side of its ``X-Amz-Date`` (as AWS)."""
REQUIRED_SIGNED = ("host", "x-amz-date", "x-amz-target")
"""Headers a signature must cover: where it goes, when, and which operation."""

_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
                   r"\s*Signature=(?P<sig>[0-9a-f]{64})$")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")


@dataclass(frozen=True)
class Credentials:
    """The endpoint's key pair; ``repr`` does not show the secret."""

    access_key_id: str
    secret_access_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.access_key_id):
            raise ValueError("an access key id is 16 to 128 upper-case letters and digits")
        if not 16 <= len(self.secret_access_key) <= 128 or not self.secret_access_key.isascii() \
                or any(c.isspace() for c in self.secret_access_key):
            raise ValueError("a secret access key is 16 to 128 ASCII characters without spaces")

    @classmethod
    def generate(cls) -> "Credentials":
        """A fresh random pair: ``LOCAL`` + 15 upper-case letters and digits, a 40-character secret."""
        alnum = string.ascii_uppercase + string.digits
        return cls("LOCAL" + "".join(secrets.choice(alnum) for _ in range(15)), secrets.token_urlsafe(30))


class AuthError(Exception):
    def __init__(self, type_: str, message: str, status: int):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status

    def body(self) -> dict:
        return {"__type": self.type, "Message": self.message}


def _invalid(message: str = "The request signature we calculated does not match the signature you provided. "
                            "Check your AWS Secret Access Key and signing method.") -> AuthError:
    return AuthError("InvalidSignatureException", message, 403)


def check(credentials: Credentials, *, method: str, path: str, headers: Message, body: bytes,
          now: float | None = None) -> None:
    """Raise :class:`AuthError` unless the request carries a valid SigV4 signature by ``credentials``.

    Parameters
    ----------
    method, path : the request line (``path`` with its query string)
    headers : the request headers as received
    body : the request body as received
    now : epoch seconds (default: the real clock; signatures are always on real time)
    """
    header = headers.get("Authorization")
    if not header:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token", 400)
    m = _AUTH.match(header.strip())
    if m is None:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                        "(AWS4-HMAC-SHA256).", 400)
    parts = m["cred"].split("/")
    if len(parts) != 5:
        raise AuthError("IncompleteSignatureException", "Credential must have exactly 5 slash-delimited elements, "
                        "e.g. keyid/date/region/service/term.", 400)
    key_id, date, region, service, term = parts
    if not hmac.compare_digest(key_id.encode(), credentials.access_key_id.encode()):
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.", 403)
    if service != SERVICE or term != "aws4_request" or not region:
        raise _invalid(f"Credential should be scoped to a valid region and to the service '{SERVICE}'.")
    amz_date = headers.get("X-Amz-Date") or ""
    if not _AMZ_DATE.match(amz_date) or amz_date[:8] != date:
        raise _invalid("X-Amz-Date must be YYYYMMDDTHHMMSSZ and agree with the credential scope's date.")
    signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW_S:
        raise _invalid(f"Signature expired: {amz_date} is more than {MAX_SKEW_S // 60} minutes from the endpoint's "
                       f"time {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}.")
    signed = m["signed"].split(";")
    missing = [h for h in REQUIRED_SIGNED if h not in signed]
    if missing or any(headers.get(h) is None for h in signed):
        raise _invalid(f"The signature must cover {', '.join(REQUIRED_SIGNED)}, and every signed header must be sent.")
    claimed = headers.get("X-Amz-Content-SHA256")
    if claimed is not None and not hmac.compare_digest(claimed.encode(), hashlib.sha256(body).hexdigest().encode()):
        raise _invalid("X-Amz-Content-SHA256 is not the SHA-256 of the request body.")

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    # The request as the client signed it: the signed headers only, as received; the body as received.
    req = AWSRequest(method=method, url=f"http://{headers['host']}{path}", data=body)
    for name in signed:
        for value in headers.get_all(name) or ():
            req.headers[name] = value
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(BotoCredentials(credentials.access_key_id, credentials.secret_access_key), SERVICE, region)
    if signer.signed_headers(signer.headers_to_sign(req)) != m["signed"]:
        raise _invalid("SignedHeaders must be the sorted lower-case names of signable headers.")
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if not hmac.compare_digest(expected.encode(), m["sig"].encode()):
        raise _invalid()
