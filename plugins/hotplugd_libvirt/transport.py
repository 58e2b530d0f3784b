"""One domain's guest agent through libvirt: the shared protocol's :class:`~hotplugd_guestagent.commands.Agent`.

libvirt owns the agent's channel and does the framing and the ``guest-sync``
itself; ``qemuAgentCommand`` takes the request's JSON and returns the whole
reply object's. The reply is still the tenant's: it is framed with the shared
bounds (:mod:`hotplugd_guestagent.framing`: size, tokens, depth) before it is
decoded, and unwrapped like any reply (:func:`hotplugd_guestagent.commands.unwrap`).

Each call blocks (libvirt's RPC), so it runs in a worker thread, bounded by the
backend's thread limiter, one at a time per domain (libvirt serialises a
domain's agent commands anyway): a domain whose agent never answers holds one
thread for at most its timeout, never another domain's. libvirt's own timeout
(whole seconds) bounds the call; the await gives up a little later in case
libvirtd itself hangs (the thread then ends when the connection's keepalive
closes it). While libvirtd restarts, the backend waits for the new connection
and sends the request again (within the request's time), so the guest is not
taken for down.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from hotplugd_guestagent.commands import request, unwrap
from hotplugd_guestagent.errors import AgentProtocolError, AgentTimeout, AgentUnavailable
from hotplugd_guestagent.framing import MAX_FRAME, FrameError, Framer

from .hypervisor import ConnectionLost

#: How much longer than libvirt's own timeout the await waits for the thread.
GRACE = 5.0

Caller = Callable[[str, str, int], Awaitable[str]]


def decode_reply(text: str, who: str) -> Any:
    """The agent's reply (as libvirt hands it over), framed within the shared bounds and decoded once."""
    if len(text) > MAX_FRAME:
        raise AgentProtocolError("oversized_reply", f"{who}: a reply of {len(text)} characters")
    buf = bytearray(text.encode(errors="replace"))
    try:
        value = Framer().take(buf)
    except FrameError as exc:
        raise AgentProtocolError(exc.reason, f"{who}: {exc}") from None
    if value is None or buf.strip():
        raise AgentProtocolError("protocol_error", f"{who}: not one whole reply object")
    return value


class LibvirtAgent:
    """Requests to one domain's agent through ``call`` (the backend's: a worker thread on its connection)."""

    def __init__(self, domain: str, call: Caller, timeout: float) -> None:
        self.domain = domain
        self.timeout = timeout
        self._call = call
        self._lock = anyio.Lock()
        self.requests = 0

    def __repr__(self) -> str:
        return f"<LibvirtAgent {self.domain} requests={self.requests}>"

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        limit = self.timeout if timeout is None else timeout
        seconds = max(1, math.ceil(limit))  # qemuAgentCommand takes whole seconds
        text = json.dumps(request(command, arguments))
        async with self._lock:
            self.requests += 1
            try:
                with anyio.fail_after(2 * seconds + GRACE):  # the backend may wait out a reconnection
                    reply = await self._call(self.domain, text, seconds)
            except TimeoutError:
                raise AgentTimeout(f"{self.domain}: libvirt did not answer {command} within "
                                   f"{2 * seconds + GRACE:g} s") from None
            except ConnectionLost as exc:
                raise AgentUnavailable(f"{self.domain}: {exc}") from None
        return unwrap(command, decode_reply(reply, self.domain), self.domain)

    def abort(self) -> None:
        """Nothing to give up: libvirt fails the request in flight itself when the agent goes away."""

    async def close(self) -> None:
        """Nothing to close: the connection is the backend's."""
