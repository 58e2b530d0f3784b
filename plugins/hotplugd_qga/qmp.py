"""An async QMP session used only to receive a guest's QEMU events.

The daemon has its own monitor per guest (a second ``-mon chardev=...,mode=control``
beside the one the management stack uses): QMP is JSON lines on a unix socket,
a greeting, ``qmp_capabilities``, then asynchronous ``{"event": ...}`` messages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

#: One QMP message longer than this is an error (events are small).
MAX_LINE = 1 << 20
LINK_ERRORS = (OSError, anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
               anyio.ClosedResourceError, anyio.DelimiterNotFound)


class QmpError(Exception):
    """The monitor answered something that is not QMP, or refused capabilities negotiation."""


class Monitor:
    """A negotiated QMP session; iterate :meth:`events`."""

    def __init__(self, stream: SocketStream, path: str) -> None:
        self.path = path
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)

    def __repr__(self) -> str:
        return f"<Monitor {self.path}>"

    @classmethod
    async def connect(cls, path: str, timeout: float) -> Monitor:
        """Connect, read the greeting and negotiate; raise OSError, TimeoutError or :class:`QmpError`."""
        stream = await anyio.connect_unix(path)
        monitor = cls(stream, path)
        try:
            with anyio.fail_after(timeout):
                greeting = await monitor._read()
                if "QMP" not in greeting:
                    raise QmpError(f"{path}: not a QMP greeting: {greeting!r}")
                await stream.send(b'{"execute": "qmp_capabilities"}\n')
                while "return" not in (reply := await monitor._read()):
                    if "error" in reply:
                        raise QmpError(f"{path}: qmp_capabilities refused: {reply['error']!r}")
        except BaseException:
            await monitor.aclose()
            raise
        return monitor

    async def _read(self) -> dict[str, Any]:
        line = await self._reader.receive_until(b"\n", MAX_LINE)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"{self.path}: not JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QmpError(f"{self.path}: not a QMP message: {message!r}")
        return message

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event message, until the socket closes (which raises one of :data:`LINK_ERRORS`)."""
        while True:
            message = await self._read()
            if "event" in message:
                yield message

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()
