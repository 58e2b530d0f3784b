"""Framing the agent's byte stream into JSON values, in one pass and within bounds.

The guest's agent is the tenant's: whatever it sends is untrusted. A
:class:`Framer` scans the bytes of one reply as they arrive, keeping its place
(string or not, nesting depth), so a reply read in N pieces costs O(N) and is
decoded once, when its last bracket arrives. It refuses, with a
:class:`FrameError` whose ``reason`` says why:

- ``protocol_error``: anything but ``{``/``[`` where a value starts, a ``0xFF``
  inside a value, nesting deeper than :data:`MAX_DEPTH` (Python's decoder
  recurses: a deep array raised ``RecursionError``), a value the decoder
  refuses (bad JSON, bad UTF-8, an integer over Python's 4,300 digits);
- ``oversized_reply``: a value over :data:`MAX_FRAME` bytes, or over
  :data:`MAX_TOKENS` structural tokens (brackets, strings, escapes, commas),
  which bounds the decoded objects as well as the bytes.

The bounds follow QEMU's own JSON streamer (``qobject/json-streamer.c``: 2 Mi
tokens; 64 MiB and 1,024 levels there, smaller here because agent replies are
at most a few MiB and four levels deep). Whitespace between values is dropped
as it arrives, so a flood of empty lines holds no memory; more than
:data:`MAX_FRAME` bytes of it before a value is a ``flood``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A reply bigger than this is not one: a 16 TiB guest's block list is about 7 MiB.
MAX_FRAME = 16 << 20
#: Structural tokens in one reply: a block list costs about 8 per block.
MAX_TOKENS = 2 << 20
#: Nesting in one reply: the agent's are four levels deep at most.
MAX_DEPTH = 64

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_PLAIN = re.compile(rb'[^"\[\]{},\xff]*')  # numbers, literals, colons, whitespace: nothing to track
_STRING_BODY = re.compile(rb'[^"\\\xff]*')  # inside a string, up to its end, an escape or a 0xFF
_OPEN = b"[{"
_CLOSE = b"]}"


class FrameError(ValueError):
    """The stream is not a bounded JSON value where one should start; ``reason`` names the breach."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Framer:
    """Finds the end of the JSON value at the start of a buffer, as its bytes arrive.

    Call :meth:`take` after each read; it scans only the bytes added since the
    last call and returns the value once it is whole (removing it from the
    buffer), else None. One Framer per value: make a new one for the next.
    """

    def __init__(self) -> None:
        self._pos = 0  # bytes of the buffer already scanned
        self._depth = 0
        self._in_string = False
        self._tokens = 0
        self._skipped = 0  # whitespace dropped before the value

    def __repr__(self) -> str:
        where = "string" if self._in_string else f"depth {self._depth}"
        return f"<Framer at {self._pos} [{where}] tokens={self._tokens}>"

    def take(self, buf: bytearray) -> Any | None:
        """The value at the start of ``buf``, removed from it; None while incomplete. Raise :class:`FrameError`."""
        if self._pos == 0:  # no value started yet: drop the whitespace before it
            blank = _WHITESPACE.match(buf).end()
            del buf[:blank]
            self._skipped += blank
            if self._skipped > MAX_FRAME:
                raise FrameError("flood", f"more than {MAX_FRAME} bytes of whitespace without a reply")
            if not buf:
                return None
            if buf[0] not in _OPEN:
                raise FrameError("protocol_error", f"a reply starts with {bytes(buf[:16])!r}, not an object")
        end = self._scan(buf)
        if end is None:
            if self._pos > MAX_FRAME:
                raise FrameError("oversized_reply", f"more than {MAX_FRAME} bytes without a complete reply")
            return None
        frame = bytes(buf[:end])
        del buf[:end]
        try:
            return json.loads(frame)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the integer digit limit
            raise FrameError("protocol_error", f"an undecodable reply: {exc}") from None

    def _scan(self, buf: bytearray) -> int | None:
        """Advance over ``buf``; the end of the value when its outermost bracket closed, else None."""
        pos, size = self._pos, len(buf)
        while pos < size:
            if self._in_string:
                pos = _STRING_BODY.match(buf, pos).end()
                if pos >= size:
                    break
                byte = buf[pos]
                if byte == 0x5C:  # a backslash: skip the escaped byte, if it arrived
                    if pos + 1 >= size:
                        break
                    pos += 2
                    self._count()
                    continue
                if byte == 0xFF:
                    raise FrameError("protocol_error", "a 0xFF inside a reply")
                self._in_string = False
                pos += 1
                continue
            pos = _PLAIN.match(buf, pos).end()
            if pos >= size:
                break
            byte = buf[pos]
            pos += 1
            self._count()
            if byte == 0x22:  # "
                self._in_string = True
            elif byte in _OPEN:
                self._depth += 1
                if self._depth > MAX_DEPTH:
                    raise FrameError("protocol_error", f"a reply nested deeper than {MAX_DEPTH} levels")
            elif byte in _CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    self._pos = pos
                    return pos
            elif byte == 0xFF:
                raise FrameError("protocol_error", "a 0xFF inside a reply")
        self._pos = pos
        return None

    def _count(self) -> None:
        self._tokens += 1
        if self._tokens > MAX_TOKENS:
            raise FrameError("oversized_reply", f"more than {MAX_TOKENS} tokens in one reply")


def take_object(buf: bytearray) -> Any | None:
    """Remove and return the first JSON value of ``buf`` (after whitespace); None if incomplete.

    A one-shot :class:`Framer` (it rescans from the start): for tests and tools, not the reader.
    """
    return Framer().take(buf)
