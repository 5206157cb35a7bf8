"""Reading a large JSON file in pieces: the top level's arrays come out as runs of whole elements.

A COCO results file is one JSON array; a COCO instances file is one object whose
``annotations`` (and ``images``) are arrays. :func:`events` reads the file in blocks
and finds, with a few numpy passes per block, which bytes are inside strings and how
deep every bracket is (the first stage of simdjson, in numpy). Arrays at the top level,
or directly under the top-level object, then come out as byte runs holding whole
elements (``b'{...},{...}'``), which :func:`parse_items` turns into Python objects with
the standard library's parser, in any process. Other values of the top-level object are
parsed whole.

The reader assumes well-formed JSON and checks only what it needs. Anything it does not
expect (another top-level value, a byte-order mark other than UTF-8's, brackets that do
not add up, something after the end, an element that does not parse, bytes that are not
UTF-8) raises :class:`Malformed`: the caller then reads the file whole with
:func:`json.load`, whose error names the line and column as before.
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np

BLOCK = 1 << 23
"""Bytes read at a time; an items event holds the whole elements of about one block."""

_WS = b" \t\r\n"


class Malformed(Exception):
    """The streaming reader cannot go on; read the file whole for the exact error."""


_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[list(b"{}[],:")] = True
_STEP = np.zeros(256, dtype=np.int32)
_STEP[list(b"{[")] = 1
_STEP[list(b"}]")] = -1


class _Buffer:
    """The unread part of the file, with the structural bytes in it (brackets, commas and
    colons outside strings): their positions ``pos`` (in the file), bytes ``chars`` and
    the nesting depth after each (``depth``)."""

    def __init__(self, f, block: int):
        self.f, self.block = f, block
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = np.zeros(0, dtype=np.int64)
        self.chars = np.zeros(0, dtype=np.uint8)
        self.depth = np.zeros(0, dtype=np.int32)
        self.eof = False
        self._in_str = False
        self._bs = 0  # backslashes at the end of what was read
        self._d = 0

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(self.block)
        if not data:
            self.eof = True
            return False
        pos, chars, depth = self._scan(data, self.base + len(self.buf))
        self.buf += data
        self.pos = np.concatenate([self.pos, pos])
        self.chars = np.concatenate([self.chars, chars])
        self.depth = np.concatenate([self.depth, depth])
        return True

    def _backslashes_before(self, b: np.ndarray, i: int) -> int:
        k = i
        while k > 0 and b[k - 1] == 92:
            k -= 1
        return i - k + (self._bs if k == 0 else 0)

    def _scan(self, data: bytes, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = np.frombuffer(data, dtype=np.uint8)
        quote = b == 34
        q = np.flatnonzero(quote)
        maybe = np.flatnonzero(b[np.maximum(q - 1, 0)] == 92) if q.size else q
        if self._bs and q.size and q[0] == 0:
            maybe = np.union1d(maybe, [0])
        escaped = [j for j in maybe.tolist() if self._backslashes_before(b, int(q[j])) % 2 == 1]
        if escaped:  # a quote after an odd run of backslashes is part of a string
            quote[q[escaped]] = False
            q = np.delete(q, escaped)
        s = np.flatnonzero(_STRUCTURAL[b])
        # quotes up to each byte, mod 2 (a structural byte is no quote): inside a string when odd
        outside = np.bitwise_xor.accumulate(quote.view(np.uint8))[s] == self._in_str
        s = s[outside]
        chars = b[s]
        depth = self._d + np.cumsum(_STEP[chars], dtype=np.int32)
        self._in_str = bool((q.size + self._in_str) % 2)
        self._bs = self._backslashes_before(b, b.size)
        if depth.size:
            self._d = int(depth[-1])
            if depth.min() < 0:
                raise Malformed("a closing bracket without its opening one")
        return s + start, chars, depth

    def consume(self, k: int) -> None:
        """Drop the first ``k`` bytes of the buffer."""
        self.buf = self.buf[k:]
        self.base += k
        keep = np.searchsorted(self.pos, self.base)
        self.pos, self.chars, self.depth = self.pos[keep:], self.chars[keep:], self.depth[keep:]

    def skip_ws(self, i: int) -> int:
        """Index of the first non-whitespace byte at or after ``i`` (reading more as needed)."""
        while True:
            while i < len(self.buf) and self.buf[i] in _WS:
                i += 1
            if i < len(self.buf):
                return i
            if not self.more():
                raise Malformed("unexpected end of file")

    def find(self, i: int, chars: bytes, depth: int) -> int:
        """First structural byte at or after ``i`` among ``chars`` with nesting ``depth`` after it."""
        return self._first(i, lambda c, d: np.isin(c, np.frombuffer(chars, dtype=np.uint8)) & (d == depth))

    def find_sep(self, i: int) -> int:
        """The ``,`` or ``}`` ending a value of the top-level object that starts at ``i``."""
        return self._first(i, lambda c, d: ((c == 44) & (d == 1)) | ((c == 125) & (d == 0)))

    def _first(self, i: int, test) -> int:
        while True:
            lo = np.searchsorted(self.pos, self.base + i)
            k = np.flatnonzero(test(self.chars[lo:], self.depth[lo:]))
            if k.size:
                return int(self.pos[lo + k[0]]) - self.base
            if not self.more():
                raise Malformed("unexpected end of file")


def _array(buf: _Buffer, i: int, level: int, key) -> Iterator[tuple]:
    """Stream the array whose ``[`` is at ``buf.buf[i]`` (depth ``level`` inside it); on return
    its ``]`` has been consumed."""
    buf.consume(i + 1)
    first = True
    while True:
        ch, dp = buf.chars, buf.depth
        end = np.flatnonzero((ch == 93) & (dp == level - 1))
        commas = np.flatnonzero((ch == 44) & (dp == level))
        if end.size:
            stop = int(buf.pos[end[0]]) - buf.base
            body = buf.buf[:stop]
            if body.strip(_WS):
                yield ("items", key, body)
            elif not first or (commas.size and commas[0] < end[0]):
                raise Malformed("an empty element")
            buf.consume(stop + 1)
            return
        if commas.size and (int(buf.pos[commas[-1]]) - buf.base >= buf.block // 2 or buf.eof):
            c = int(buf.pos[commas[-1]]) - buf.base
            body = buf.buf[:c]
            if not body.strip(_WS):
                raise Malformed("an empty element")
            yield ("items", key, body)
            first = False
            buf.consume(c + 1)
            continue
        if not buf.more():
            raise Malformed("unexpected end of file")


def events(path, block: int = BLOCK) -> Iterator[tuple]:
    """The top level of a JSON file, in pieces.

    Yields ``("array", None)`` then ``("items", None, bytes)`` ... for a top-level array;
    ``("object", None)``, then per key ``("array", key)`` with its ``("items", key, bytes)``
    ... and ``("end", key)``, or ``("value", key, obj)``, for a top-level object.
    ``bytes`` holds whole elements separated by commas (see :func:`parse_items`).
    Raises :class:`Malformed` (see the module docstring) and OSError.
    """
    with open(path, "rb") as f:
        buf = _Buffer(f, block)
        buf.more()
        if buf.buf.startswith(b"\xef\xbb\xbf"):
            buf.consume(3)
        i = buf.skip_ws(0)
        c = buf.buf[i:i + 1]
        if c == b"[":
            yield ("array", None)
            yield from _array(buf, i, 1, None)
        elif c == b"{":
            yield ("object", None)
            buf.consume(i + 1)
            i = buf.skip_ws(0)
            if buf.buf[i:i + 1] == b"}":
                buf.consume(i + 1)
            else:
                while True:
                    colon = buf.find(0, b":", 1)
                    try:
                        key = json.loads(buf.buf[:colon])
                    except (ValueError, RecursionError):
                        raise Malformed("a key that does not parse") from None
                    if not isinstance(key, str):
                        raise Malformed("a key that is not a string")
                    v = buf.skip_ws(colon + 1)
                    if buf.buf[v:v + 1] == b"[":
                        yield ("array", key)
                        yield from _array(buf, v, 2, key)
                        yield ("end", key)
                        j = buf.skip_ws(0)
                        sep = buf.buf[j:j + 1]
                    else:
                        j = buf.find_sep(v)
                        try:
                            value = json.loads(buf.buf[v:j])
                        except (ValueError, RecursionError):
                            raise Malformed("a value that does not parse") from None
                        yield ("value", key, value)
                        sep = buf.buf[j:j + 1]
                    if sep == b",":
                        buf.consume(j + 1)
                        continue
                    if sep == b"}" and buf.depth[np.searchsorted(buf.pos, buf.base + j)] == 0:
                        buf.consume(j + 1)
                        break
                    raise Malformed("expected ',' or '}' after a value")
        else:
            raise Malformed("the top level is not an array or an object")
        while True:  # only whitespace may follow
            if buf.buf.strip(_WS):
                raise Malformed("extra data after the top-level value")
            buf.consume(len(buf.buf))
            if not buf.more():
                return


def parse_items(body: bytes) -> list:
    """The elements in an items event's bytes (raises :class:`Malformed` when they do not parse)."""
    try:
        out = json.loads(b"[" + body + b"]")
    except (ValueError, RecursionError):
        raise Malformed("elements that do not parse") from None
    return out
