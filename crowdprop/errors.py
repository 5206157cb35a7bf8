"""Errors that end a command with a one-line message and exit code 2.

Every error caused by what a user handed us names the file, the record and the
field, so the user can find and fix it without reading a traceback::

    predictions.json: record 17 (id=4411): field 'segmentation': polygon has 2 points, needs >= 3
"""
from __future__ import annotations


class CrowdpropError(Exception):
    """Base class for errors that the CLI turns into one line and an exit code."""

    exit_code = 2


class InputError(CrowdpropError):
    """Bad user input: names the file, the record and the field."""

    def __init__(self, file: object, record: object, field: object, message: str):
        self.file = str(file)
        self.record = record
        self.field = field
        self.message = message
        super().__init__(self.format())

    def __reduce__(self):
        # picklable with its four arguments (errors raised in worker processes, e.g. Ray actors)
        return (type(self), (self.file, self.record, self.field, self.message))

    def format(self) -> str:
        parts = [self.file]
        if self.record is not None:
            parts.append(f"record {self.record}" if not isinstance(self.record, str) else self.record)
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"


class StateError(CrowdpropError):
    """The run directory is missing, incomplete, locked or inconsistent."""


class BudgetExhausted(CrowdpropError):
    """Raised inside the campaign loop when the next spend would pass the cap."""

    exit_code = 0


class MTurkError(CrowdpropError):
    """MTurk refused a request, or answered something crowdprop cannot use.

    The local MTurk-compatible endpoint (:mod:`crowdprop.mturk_local`) raises it with what
    MTurk's error response carries: ``turk_code`` (``TurkErrorCode``), ``type``
    (``__type``) and the HTTP ``status``; :meth:`body` is that response.
    """

    def __init__(self, message: str, turk_code: str | None = None, *, type_: str = "RequestError",
                 status: int = 400):
        super().__init__(message)
        self.message = message
        self.turk_code = turk_code
        self.type = type_
        self.status = status

    def body(self) -> dict:
        """MTurk's JSON error response: ``{"__type": ..., "Message": ..., "TurkErrorCode": ...}``."""
        out = {"__type": self.type, "Message": self.message}
        if self.turk_code:
            out["TurkErrorCode"] = self.turk_code
        return out


class MissingExtra(CrowdpropError):
    """A command needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, module: str):
        super().__init__(
            f"this command needs the optional dependency '{module}': "
            f"pip install 'crowdprop[{extra}]'"
        )
