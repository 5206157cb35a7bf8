"""The parameter checks of the local endpoint's operations, with MTurk's error codes.

A missing required parameter is ``AWS.MissingParameters``; a value of the wrong type,
length or range ``AWS.ParameterOutOfRange``, as MTurk answers them.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, overload

from .core import ServiceCore
from .records import ENTITY_ID, MAX_QUALIFICATION_REQUIREMENTS, SYSTEM_QUALIFICATIONS


class ParamChecks(ServiceCore):
    """Reading an operation's parameters: strings, integers, entity and worker ids, qualification requirements."""

    @overload
    def _str(self, p: Mapping, name: str, *, required: Literal[True], max_len: int | None = None,
             min_len: int = 0) -> str: ...

    @overload
    def _str(self, p: Mapping, name: str, *, required: bool = False, max_len: int | None = None,
             min_len: int = 0) -> str | None: ...

    def _str(self, p: Mapping, name: str, *, required: bool = False, max_len: int | None = None,
             min_len: int = 0) -> str | None:
        """Parameter ``name``: a string of ``min_len`` to ``max_len`` characters, or None when absent
        and not ``required``."""
        v = p.get(name)
        if v is None:
            if required:
                raise self._err(f"Parameter {name} is required.", "AWS.MissingParameters")
            return None
        if not isinstance(v, str):
            raise self._err(f"Value for {name} must be a string.", "AWS.ParameterOutOfRange")
        if len(v) < min_len or (max_len is not None and len(v) > max_len):
            raise self._err(f"Value for {name} must be between {min_len} and {max_len} characters long.",
                            "AWS.ParameterOutOfRange")
        return v

    @overload
    def _int(self, p: Mapping, name: str, *, required: Literal[True], lo: int | None = None,
             hi: int | None = None) -> int: ...

    @overload
    def _int(self, p: Mapping, name: str, *, default: int, lo: int | None = None, hi: int | None = None) -> int: ...

    @overload
    def _int(self, p: Mapping, name: str, *, lo: int | None = None, hi: int | None = None) -> int | None: ...

    def _int(self, p: Mapping, name: str, *, required: bool = False, default: int | None = None,
             lo: int | None = None, hi: int | None = None) -> int | None:
        """Parameter ``name``: an integer (a whole float too) in ``[lo, hi]``, else ``default`` when absent
        and not ``required``."""
        v = p.get(name)
        if v is None:
            if required:
                raise self._err(f"Parameter {name} is required.", "AWS.MissingParameters")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise self._err(f"Value for {name} must be an integer.", "AWS.ParameterOutOfRange")
        v = int(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self._err(f"Value {v} for {name} is out of range: must be between {lo} and {hi}.",
                            "AWS.ParameterOutOfRange")
        return v

    def _entity(self, p: Mapping, name: str) -> str:
        v = self._str(p, name, required=True, min_len=1, max_len=64)
        if not ENTITY_ID.match(v):
            raise self._err(f"Value '{v}' for {name} is invalid.", "AWS.ParameterOutOfRange")
        return v

    def _worker(self, p: Mapping, name: str = "WorkerId") -> str:
        # MTurk worker ids match ^A[A-Z0-9]+$; simulated ids need not, so only the length is checked.
        return self._str(p, name, required=True, min_len=1, max_len=64)

    def _requirements(self, reqs: Any) -> list[dict]:
        if reqs is None:
            return []
        if not isinstance(reqs, list) or len(reqs) > MAX_QUALIFICATION_REQUIREMENTS:
            raise self._err(f"A HIT can have between 0 and {MAX_QUALIFICATION_REQUIREMENTS} QualificationRequirements.",
                            "AWS.ParameterOutOfRange")
        out = []
        for r in reqs:
            if not isinstance(r, dict):
                raise self._err("A QualificationRequirement must be a structure.", "AWS.ParameterOutOfRange")
            qt = self._str(r, "QualificationTypeId", required=True, min_len=1)
            comp = self._str(r, "Comparator", required=True)
            ints = r.get("IntegerValues")
            locs = r.get("LocaleValues")
            if comp not in ("LessThan", "LessThanOrEqualTo", "GreaterThan", "GreaterThanOrEqualTo", "EqualTo",
                            "NotEqualTo", "Exists", "DoesNotExist", "In", "NotIn"):
                raise self._err(f"Comparator {comp} is invalid.", "AWS.ParameterOutOfRange")
            if comp in ("Exists", "DoesNotExist") and (ints or locs):
                raise self._err(f"IntegerValues and LocaleValues must not be given with Comparator {comp}.",
                                "AWS.ParameterOutOfRange")
            if comp in ("In", "NotIn"):
                n = len(ints or []) + len(locs or [])
                if not 1 <= n <= 30:
                    raise self._err(f"Comparator {comp} needs between 1 and 30 values.", "AWS.ParameterOutOfRange")
            elif comp not in ("Exists", "DoesNotExist"):
                if len(ints or []) + len(locs or []) != 1:
                    raise self._err(f"Comparator {comp} needs exactly one IntegerValue or LocaleValue.",
                                    "AWS.ParameterOutOfRange")
            if qt not in SYSTEM_QUALIFICATIONS and qt not in self._qual_types:
                raise self._err(f"QualificationType {qt} does not exist.",
                                "AWS.MechanicalTurk.QualificationTypeDoesNotExist")
            out.append({k: r[k] for k in ("QualificationTypeId", "Comparator", "IntegerValues", "LocaleValues",
                                          "RequiredToPreview", "ActionsGuarded") if k in r})
        return out
