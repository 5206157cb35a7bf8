"""Checks shared by several commands: option values, and errors of the environment
(deeply nested JSON, a full disk, a read-only folder) turned into one line.

Not a command (the CLI skips modules whose name starts with ``_``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import Iterator

from ..errors import InputError


def strip_credentials(url: str | None, *, quiet: bool = False) -> str | None:
    """``url`` without a ``user:password@`` part (typed into --endpoint-url by mistake:
    crowdprop signs requests with the AWS chain only, and prints and stores URLs).
    Says so on stderr unless ``quiet``."""
    if not url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    # up to the last '@' before any query or fragment: a secret key may hold '/', so urlsplit's
    # netloc (which ends at the first '/') would leave the rest of it in the path
    head = rest.split("?", 1)[0].split("#", 1)[0]
    if "@" not in head:
        return url
    if not quiet:
        print("crowdprop run: the user name and password in --endpoint-url are ignored (credentials come from the "
              "AWS chain only) and not stored", file=sys.stderr)
    return f"{scheme}://{rest[head.rindex('@') + 1:]}"


def connect_error(e: Exception) -> None:
    """AWS configuration that cannot be used (an unknown --profile, a broken ~/.aws file):
    one line naming what to fix, exit 2."""
    try:
        from botocore.exceptions import BotoCoreError, ProfileNotFound
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return
    if isinstance(e, ProfileNotFound):
        name = e.kwargs.get("profile", "?")
        from_env = os.environ.get("AWS_PROFILE") == name
        where = ("environment", "AWS_PROFILE") if from_env else ("command line", "--profile")
        raise InputError(where[0], None, where[1],
                         f"no AWS profile '{name}' in ~/.aws/credentials or ~/.aws/config "
                         "(aws configure --profile NAME creates one)") from None
    if isinstance(e, BotoCoreError):
        raise InputError("AWS configuration", None, None, " ".join(str(e).split())[:300]) from None


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A seed given on the command line must be >= 0 (numpy seeds are non-negative)."""
    if seed is not None and seed < 0:
        raise InputError("command line", None, flag, f"must be >= 0, got {seed}")


def check_seconds(value: float | None, flag: str, *, most: float = 86400.0) -> None:
    """A number of seconds given on the command line: finite, > 0 and at most ``most``."""
    if value is not None and not (math.isfinite(value) and 0 < value <= most):
        raise InputError("command line", None, flag, f"must be a number of seconds in (0, {most:g}], got {value}")


def _too_deep(path: str | os.PathLike) -> bool:
    """Whether the JSON (or TOML) file at ``path`` is nested beyond what the parser can follow."""
    import tomllib

    parse = tomllib.load if str(path).lower().endswith(".toml") else json.load
    try:
        with open(path, "rb") as f:
            parse(f)
    except RecursionError:
        return True
    except (OSError, ValueError):  # not this file's problem (JSONDecodeError, TOMLDecodeError are ValueErrors)
        return False
    return False


@contextlib.contextmanager
def json_depth_guard(*paths: str | os.PathLike | None) -> Iterator[None]:
    """Turn Python's RecursionError on a deeply nested JSON (or TOML) input into one line naming the file.

    Python's JSON and TOML parsers recurse once per level of nesting; a file like
    ``[[[[...]]]]`` thousands of levels deep ends in a RecursionError wherever it is
    read. The block runs unchanged; only when it raises RecursionError are the given
    files parsed again to find the culprit (anything else re-raises as it was).
    """
    try:
        yield
    except RecursionError:
        for p in paths:
            if p is not None and _too_deep(p):
                raise InputError(p, None, None, "nested too deeply (thousands of levels of [ or {)") from None
        raise
