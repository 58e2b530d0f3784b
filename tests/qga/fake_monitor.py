"""A fake QMP monitor on a unix socket (QEMU's side), for the qga backend's tests.

Greeting and capabilities as QEMU 7.2 sends them, events pushed by the test,
and commands answered (``query-memory-devices``) or scripted to fail or hang.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskGroup


@dataclass
class FakeMonitor:
    """QEMU's side of a QMP monitor: greeting, capabilities, then events pushed by the test, and
    ``query-memory-devices`` answered from ``memory_devices`` (its reply shape: a list of
    ``{"type": "dimm", "data": {"id", "addr", "size", ...}}``)."""

    path: Path
    clients: list[SocketStream] = field(default_factory=list)
    negotiated: anyio.Event = field(default_factory=anyio.Event)
    capabilities: list[str] = field(default_factory=list)  # what the last client enabled
    memory_devices: list[dict[str, Any]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # every command executed after negotiation, in order
    failing: set[str] = field(default_factory=set)  # commands answered with a GenericError
    _gate: anyio.Event | None = None
    _send_lock: anyio.Lock = field(default_factory=anyio.Lock)  # replies and events share a stream

    def plug_dimm(self, device: str, first: int, count: int, block_size: int) -> None:
        """A pc-dimm ``device`` covering the ``count`` blocks from phys-index ``first``, as QEMU lists it."""
        data = {"id": device, "addr": first * block_size, "size": count * block_size, "slot": len(self.memory_devices),
                "node": 0, "memdev": f"/objects/{device}-mem", "hotplugged": True, "hotpluggable": True}
        self.memory_devices.append({"type": "dimm", "data": data})

    def hold_commands(self) -> None:
        """Answer no command until :meth:`release_commands` (events still flow)."""
        self._gate = anyio.Event()

    def release_commands(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def _send(self, stream: SocketStream, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await stream.send(json.dumps(message).encode() + b"\r\n")

    async def _serve_commands(self, stream: SocketStream) -> None:
        """Answer commands until the client goes away (or :meth:`drop`)."""
        decoder, text = json.JSONDecoder(), ""
        while True:
            text += (await stream.receive()).decode()
            while text.strip():
                try:
                    request, end = decoder.raw_decode(text.lstrip())
                except ValueError:
                    break
                text = text.lstrip()[end:]
                self.commands.append(str(request.get("execute")))
                if self._gate is not None:
                    await self._gate.wait()
                await self._send(stream, {**self._reply(request), **({"id": request["id"]} if "id" in request else {})})

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("execute")
        if name in self.failing:
            return {"error": {"class": "GenericError", "desc": f"{name} failed (scripted)"}}
        if name == "query-memory-devices":
            return {"return": self.memory_devices}
        return {"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}

    async def serve(self, tg: TaskGroup) -> None:
        listener = await anyio.create_unix_listener(self.path)
        tg.start_soon(listener.serve, self._client)

    async def _client(self, stream: SocketStream) -> None:
        greeting = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": ["oob"]}}
        async with stream:
            await stream.send(json.dumps(greeting).encode() + b"\r\n")
            data, request = b"", None
            while request is None:  # QEMU parses a JSON stream: no newline needed after a command
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                try:
                    request, _ = json.JSONDecoder().raw_decode(data.decode().strip())
                except ValueError:
                    continue
            if request.get("execute") == "qmp_capabilities":
                self.capabilities = request.get("arguments", {}).get("enable", [])
                reply = {"return": {}, **({"id": request["id"]} if "id" in request else {})}
                await stream.send(json.dumps(reply).encode() + b"\r\n")
                self.clients.append(stream)
                self.negotiated.set()
            try:
                await self._serve_commands(stream)  # until the client goes away, or drop()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            finally:
                if stream in self.clients:
                    self.clients.remove(stream)

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        message = {"event": event, "data": data, "timestamp": {"seconds": 0, "microseconds": 0}}
        for stream in list(self.clients):
            await self._send(stream, message)

    async def dimm_added(self, device: str = "dimm0", status: int = 0) -> None:
        """The guest ran the DIMM slot's ``_OST`` after an insertion (``status`` 0: it created the blocks)."""
        await self.emit("ACPI_DEVICE_OST", {"info": {"device": device, "slot": "0", "slot-type": "DIMM",
                                                     "source": 1, "status": status}})

    async def drop(self) -> None:
        """Close every client connection (QEMU restarted)."""
        for stream in list(self.clients):
            await stream.aclose()
        self.clients.clear()
        self.negotiated = anyio.Event()
