"""An async client of one guest's qemu-guest-agent, over QEMU's chardev unix socket.

The wire (measured facts in ``docs/facts/QGA.md``): JSON objects both ways. The
agent keeps no request ids, so the stream must be in step before each request:
:meth:`AgentClient._sync` sends ``0xFF`` (resets the agent's parser; draws an
error reply, discarded) and ``guest-sync-delimited`` with a fresh id, then
discards everything up to the agent's ``0xFF`` marker and reads until the
reply carrying that id. Replies to requests that timed out arrive late, ahead
of the next sync reply, and are discarded with it. Any timeout, cancellation
or unexpected reply puts the client out of step; the next request syncs first.

The agent is the tenant's, so every reply is untrusted: :mod:`.framing` bounds
each one (size, tokens, depth), and a sync gives up, as a ``flood``, after
:data:`MAX_STALE_REPLIES` replies that are not its own or :data:`MAX_DISCARD`
bytes thrown away. Those breaches raise :class:`AgentProtocolError`, whose
``reason`` says which, and drop the connection (and what it buffered).

The agent serves one client per socket (a second connection is accepted and
never served) and one request at a time: requests are serialised by a lock.
"""

from __future__ import annotations

import json
import random
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream

from hotplugd_guestagent.commands import request, short, unwrap
from hotplugd_guestagent.errors import (
    AgentAborted,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnavailable,
    CommandFailed,
    failure_reason,
)
from hotplugd_guestagent.framing import MAX_FRAME, FrameError, Framer

log = structlog.get_logger("hotplugd.qga")

MARKER = b"\xff"
#: Bytes one sync may throw away before the agent is taken for a flood (late replies are a few MiB at most).
MAX_DISCARD = MAX_FRAME
#: Replies that are not the sync's own (late ones, ids never sent) one sync may skip: one per timed-out sync is normal.
MAX_STALE_REPLIES = 64
_LINK_ERRORS = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)

__all__ = ["AgentAborted", "AgentClient", "AgentError", "AgentProtocolError", "AgentTimeout", "AgentUnavailable",
           "CommandFailed", "failure_reason"]


class AgentClient:
    """One guest's agent: :meth:`execute` a command, in step with the agent whatever happened before."""

    def __init__(self, path: str, timeout: float = 5.0, name: str = "") -> None:
        self.path = path
        self.timeout = timeout
        self.name = name or path
        self._stream: SocketStream | None = None
        self._buf = bytearray()
        self._synced = False
        self._resync = False  # set by abort(): sync before the next request
        self._lock = anyio.Lock()
        self._in_flight: anyio.CancelScope | None = None  # the request being answered, for abort()
        self.syncs = 0  # handshakes done (a re-sync after each timeout)
        self.discarded = 0  # bytes thrown away while getting back in step (late replies, parse errors)

    def __repr__(self) -> str:
        state = "READY" if self._synced else ("CONNECTED" if self._stream else "DISCONNECTED")
        return f"<AgentClient {self.name} {self.path} [{state}] syncs={self.syncs}>"

    @property
    def ready(self) -> bool:
        return self._synced

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        """Run ``command`` and return its ``return`` value. Raise an :class:`AgentError` otherwise."""
        message = request(command, arguments)
        limit = self.timeout if timeout is None else timeout
        async with self._lock:
            in_step = False
            try:
                with anyio.fail_after(limit), anyio.CancelScope() as self._in_flight:
                    if not self._synced or self._resync:
                        self._resync = False
                        await self._sync()
                    self._synced = False  # until the reply is read: a timeout leaves it unread
                    await self._send(json.dumps(message).encode())
                    reply = await self._read_object()
                    in_step = True
            except TimeoutError:
                raise AgentTimeout(f"{self.name}: no reply to {command} within {limit:g} s") from None
            except FrameError as exc:
                await self._disconnect()
                raise AgentProtocolError(exc.reason, f"{self.name}: {command}: {exc}") from None
            except _LINK_ERRORS as exc:
                await self._disconnect()
                raise AgentUnavailable(f"{self.name}: agent socket {self.path}: {exc or type(exc).__name__}") from None
            finally:
                self._synced = in_step
                self._in_flight = None
            if not in_step:  # abort(): the agent went away, no reply will come
                raise AgentAborted(f"{self.name}: the agent went away during {command}")
        try:
            return unwrap(command, reply, self.name)
        except AgentProtocolError:
            self._synced = False
            raise

    def abort(self) -> None:
        """Give up the request in flight, which raises :class:`AgentAborted`, and sync before the
        next one: the agent's port closed or opened again (QEMU said so), so no reply will come."""
        self._resync = True
        if self._in_flight is not None:
            self._in_flight.cancel()

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect()

    # -- the wire -------------------------------------------------------------------------

    async def _sync(self) -> None:
        if self._stream is None:
            self._stream = await anyio.connect_unix(self.path)
            self._buf.clear()
        token = random.randrange(1, 1 << 31)
        sync = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        await self._send(MARKER + json.dumps(sync).encode())
        discarded, stale = self.discarded, 0
        while True:
            await self._discard_to_marker(discarded + MAX_DISCARD)
            reply = await self._read_object()
            if isinstance(reply, dict) and reply.get("return") == token:
                break
            stale += 1
            if stale > MAX_STALE_REPLIES:
                raise FrameError("flood", f"more than {MAX_STALE_REPLIES} replies that are not the sync's own")
            log.debug("qga_stale_sync_reply", guest=self.name, reply=short(reply))
        self._synced = True
        self.syncs += 1

    async def _send(self, data: bytes) -> None:
        assert self._stream is not None
        await self._stream.send(data)

    async def _receive(self) -> None:
        assert self._stream is not None
        self._buf += await self._stream.receive(65536)

    async def _discard_to_marker(self, limit: int) -> None:
        """Throw away everything up to the next marker; a :class:`FrameError` past ``limit`` discarded bytes."""
        while (at := self._buf.find(MARKER)) < 0:
            self.discarded += len(self._buf)
            self._buf.clear()
            if self.discarded > limit:
                raise FrameError("flood", f"more than {MAX_DISCARD} bytes without the sync's marker")
            await self._receive()
        self.discarded += at
        del self._buf[:at + 1]

    async def _read_object(self) -> Any:
        framer = Framer()
        while (value := framer.take(self._buf)) is None:
            await self._receive()
        return value

    async def _disconnect(self) -> None:
        self._synced = False
        stream, self._stream = self._stream, None
        self._buf.clear()
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

