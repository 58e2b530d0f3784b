"""Hostile agents for the qga tests: a scripted in-memory stream, and a fake agent that lies or floods.

:class:`ScriptedStream` stands in for the agent's socket: it hands the client
pre-built chunks (``@ID@`` replaced by the id of the last sync sent, so a
script can answer the handshake) and then the end of the stream; no socket,
so thousands of hypothesis examples run in seconds and tracemalloc sees only
the reader. :class:`HostileAgent` is a :class:`~qga_fakes.FakeAgent` whose
answers a test can replace per command (``replies``) or make false (``lie``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketStream
from qga_fakes import FakeAgent

from hotplugd_qga.agent import AgentClient

ID = b"@ID@"
_SYNC_ID = re.compile(rb'"guest-sync-delimited", "arguments": \{"id": (\d+)\}')
#: The handshake's answer: the marker, then the sync's own id.
SYNC_REPLY = b'\xff{"return": @ID@}\n'


class ScriptedStream:
    """The client's side of an agent that sends ``chunks`` (lazily), whatever is asked, then closes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self.sent = bytearray()
        self.received = 0  # bytes handed to the client
        self.sync_id = b"0"

    async def send(self, data: bytes) -> None:
        self.sent += data
        if found := _SYNC_ID.search(data):
            self.sync_id = found.group(1)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        chunk = next(self._chunks, None)
        if chunk is None:
            raise anyio.EndOfStream
        chunk = chunk.replace(ID, self.sync_id)
        self.received += len(chunk)
        return chunk

    async def aclose(self) -> None:
        pass


def scripted_client(chunks: Iterable[bytes], timeout: float = 30) -> tuple[AgentClient, ScriptedStream]:
    """An agent client already "connected" to a :class:`ScriptedStream` of ``chunks``."""
    client = AgentClient("/nonexistent/qga.sock", timeout=timeout, name="hostile")
    stream = ScriptedStream(chunks)
    client._stream = stream  # type: ignore[assignment]  # the client only sends, receives and closes
    return client, stream


def repeated(piece: bytes, total: int, chunk: int = 65536) -> Iterator[bytes]:
    """``total`` bytes of ``piece`` repeated, as ``chunk``-sized reads (one buffer, reused: no allocation)."""
    block = (piece * (chunk // len(piece) + 1))[:chunk - chunk % len(piece)]
    for _ in range(total // len(block)):
        yield block


#: Answers ``request`` with these raw bytes instead of the fake's own (None: the fake's).
Reply = Callable[[dict[str, Any]], Iterable[bytes] | None]


@dataclass
class HostileAgent(FakeAgent):
    """A fake agent with scripted raw answers per command, and blocks it claims to online but does not."""

    replies: dict[str, Reply] = field(default_factory=dict)
    lie: set[int] = field(default_factory=set)  # guest-set-memory-blocks says success, the block stays offline
    flooded: int = 0  # raw bytes sent by ``replies``

    async def _client(self, stream: SocketStream) -> None:
        self._stream = stream
        await super()._client(stream)

    async def _answer(self, request: dict[str, Any]) -> bytes:
        script = self.replies.get(str(request.get("execute")))
        chunks = None if script is None else script(request)
        if chunks is None:
            return await super()._answer(request)
        for chunk in chunks:  # sent here, as it is made: a flood is never held whole
            await self._stream.send(chunk)
            self.flooded += len(chunk)
        return b""

    async def _cmd_guest_set_memory_blocks(self, **args: Any) -> list[dict[str, Any]]:
        lies = [b["phys-index"] for b in args["mem-blks"] if b["phys-index"] in self.lie]
        was = {phys: self.blocks[phys] for phys in lies if phys in self.blocks}
        results = await super()._cmd_guest_set_memory_blocks(**args)
        self.blocks.update(was)  # "success", and still offline
        return results


def sync_answer(request: dict[str, Any]) -> bytes:
    """The handshake's right answer, for scripts that replace it."""
    return b"\xff" + json.dumps({"return": request["arguments"]["id"]}).encode() + b"\n"
