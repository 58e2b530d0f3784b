"""A fake qemu-guest-agent on a unix socket, and fake guests (agent and QMP monitor), for the qga backend's tests;
an agent in memory (:class:`MemoryAgent`) for the shared links' and fleet's.

They follow the wire facts of ``docs/facts/QGA.md``: the agent answers a stray
``0xFF`` with a parse error, prefixes the ``guest-sync-delimited`` reply with
``0xFF``, answers in order and serves one client per socket (a second
connection is accepted and never served). ``pause()`` makes it hold requests;
``resume()`` answers them, late and in order, as a restarted agent does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskGroup, TaskStatus
from fake_monitor import FakeMonitor

from hotplugd_guestagent.errors import CommandFailed

__all__ = ["BLOCK", "AgentOptions", "FakeAgent", "FakeMonitor", "FakeVM", "MemoryAgent", "Overlap", "VMDirs",
           "fake_vms", "vm_dirs"]

BLOCK = 128 << 20


@dataclass(frozen=True)
class AgentOptions:
    """A guest backend's settings as its links and fleet read them (FleetOptions), for :class:`MemoryAgent` tests."""

    timeout: float = 1.0
    online_timeout_per_block: float = 0.1
    poll_interval: float = 3600.0  # no fallback poll in these tests: only wake-ups list a guest
    resize_poll_interval: float = 0.01
    resize_quiet: float = 0.0
    reconnect_interval: float = 1.0
    reconnect_max: float = 30.0
    max_batch: int = 256
    verify: bool = False
    concurrency: int = 1
    discover_interval: float = 3600.0


class MemoryAgent:
    """A guest's agent in memory, for tests of the shared links and fleet without sockets: its blocks
    (phys-index -> online), the commands it was sent; ``gate`` (when set) holds every request for ``/proc/meminfo``
    until it is set, so that a test can run another request in between (the socket client would queue it)."""

    def __init__(self, blocks: dict[int, bool]) -> None:
        self.blocks = blocks
        self.requests: list[str] = []
        self.gate: anyio.Event | None = None

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        self.requests.append(command)
        if command == "guest-get-memory-blocks":
            return [{"phys-index": p, "online": on, "can-offline": True} for p, on in self.blocks.items()]
        if command == "guest-set-memory-blocks":
            for item in (arguments or {})["mem-blks"]:
                self.blocks[item["phys-index"]] = True
            return [{"phys-index": item["phys-index"], "response": "success"} for item in (arguments or {})["mem-blks"]]
        if command == "guest-get-memory-block-info":
            return {"size": BLOCK}
        if command == "guest-get-vcpus":
            return [{"logical-id": 0, "online": True}]
        if command == "guest-file-open" and (arguments or {}).get("path") == "/proc/meminfo" and self.gate:
            await self.gate.wait()
        raise CommandFailed(command, "CommandNotFound", "not in this fake")  # files: none readable

    def abort(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class Overlap:
    """guest-set-memory-blocks calls in flight across agents that share it: now, and at most."""

    now: int = 0
    most: int = 0


def _stray_error() -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": "JSON parse error, stray '\ufffd'"}}


@dataclass
class FakeAgent:
    """The guest side: blocks (phys_index → online) and scripted answers."""

    path: Path
    blocks: dict[int, bool] = field(default_factory=dict)
    block_size: int = BLOCK
    vcpus: int = 2
    files: dict[str, str] = field(default_factory=dict)
    #: phys_index → (response, error-code) for the next set of that block
    script: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    connections: int = 0
    blocked: set[str] = field(default_factory=set)  # commands refused as qemu-ga -b does
    overlap: Overlap = field(default_factory=Overlap)  # share one between agents to see guests at once
    _serving: bool = False
    _resumed: anyio.Event | None = None
    _set_gate: anyio.Event | None = None
    _handles: dict[int, tuple[bytes, int]] = field(default_factory=dict)

    # -- what a test does ------------------------------------------------------------------

    def add(self, indices: range | list[int], online: bool = False) -> None:
        for i in indices:
            self.blocks[i] = online

    def pause(self) -> None:
        """Hold every request from now on (the agent hangs, or is being restarted)."""
        self._resumed = anyio.Event()

    def resume(self) -> None:
        """Answer the held requests, in order."""
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    def hold_sets(self) -> None:
        """Keep every guest-set-memory-blocks in flight until :meth:`release_sets`."""
        self._set_gate = anyio.Event()

    def release_sets(self) -> None:
        if self._set_gate is not None:
            self._set_gate.set()
            self._set_gate = None

    def commands(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if name is None or r.get("execute") == name]

    def set_calls(self) -> list[list[int]]:
        """The phys_index lists of every guest-set-memory-blocks, in order."""
        return [[b["phys-index"] for b in r["arguments"]["mem-blks"]] for r in self.commands("guest-set-memory-blocks")]

    def online_indices(self) -> set[int]:
        return {i for i, online in self.blocks.items() if online}

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, tg: TaskGroup) -> None:
        listener = await anyio.create_unix_listener(self.path)
        tg.start_soon(listener.serve, self._client)

    async def _client(self, stream: SocketStream) -> None:
        self.connections += 1
        if self._serving:
            await anyio.sleep_forever()  # a second client is accepted and never served
        self._serving = True
        buf = bytearray()
        try:
            async with stream:
                while True:
                    try:
                        chunk = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    self.raw += chunk
                    buf += chunk
                    for reply in await self._answer_all(buf):
                        await stream.send(reply)
        finally:
            self._serving = False

    async def _answer_all(self, buf: bytearray) -> list[bytes]:
        replies = []
        decoder = json.JSONDecoder()
        while True:
            while buf[:1] in (b" ", b"\n", b"\r", b"\t"):
                del buf[:1]
            if buf[:1] == b"\xff":  # resets the parser, and draws an error reply
                del buf[:1]
                replies.append(json.dumps(_stray_error()).encode() + b"\n")
                continue
            cut = buf.find(b"\xff")
            try:
                text = bytes(buf if cut < 0 else buf[:cut]).decode()
                request, end = decoder.raw_decode(text)
            except ValueError:  # incomplete (UnicodeDecodeError is a ValueError too)
                return replies
            del buf[:len(text[:end].encode())]
            self.requests.append(request)
            if self._resumed is not None:
                await self._resumed.wait()
            replies.append(await self._answer(request))

    async def _answer(self, request: dict[str, Any]) -> bytes:
        name, args = request.get("execute"), request.get("arguments") or {}
        handler = getattr(self, "_cmd_" + str(name).replace("-", "_"), None)
        if name in self.blocked:
            disabled = f"The command {name} has been disabled"
            reply: dict[str, Any] = {"error": {"class": "GenericError", "desc": disabled}}
        elif handler is None:
            reply = {"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}
        else:
            try:
                reply = {"return": await handler(**args)}
            except (KeyError, TypeError, ValueError) as exc:
                reply = {"error": {"class": "GenericError", "desc": str(exc)}}
        data = json.dumps(reply).encode() + b"\n"
        return b"\xff" + data if name == "guest-sync-delimited" else data

    async def _cmd_guest_sync_delimited(self, id: int) -> int:
        return id

    async def _cmd_guest_get_memory_block_info(self) -> dict[str, int]:
        return {"size": self.block_size}

    async def _cmd_guest_get_vcpus(self) -> list[dict[str, Any]]:
        return [{"online": True, "can-offline": i > 0, "logical-id": i} for i in range(self.vcpus)]

    async def _cmd_guest_get_memory_blocks(self) -> list[dict[str, Any]]:
        items = [{"phys-index": i, "online": on, "can-offline": True} for i, on in self.blocks.items()]
        return items[::-1]  # the real agent lists them unsorted

    async def _cmd_guest_set_memory_blocks(self, **args: Any) -> list[dict[str, Any]]:
        self.overlap.now += 1
        self.overlap.most = max(self.overlap.most, self.overlap.now)
        try:
            if self._set_gate is not None:
                await self._set_gate.wait()
        finally:
            self.overlap.now -= 1
        results = []
        for item in args["mem-blks"]:
            phys = item["phys-index"]
            response, code = self.script.pop(phys, ("success", None))
            if response == "success" and phys not in self.blocks:
                response, code = "not-found", 2
            if response == "success":
                self.blocks[phys] = item["online"]
            result: dict[str, Any] = {"phys-index": phys, "response": response}
            if code is not None:
                result["error-code"] = code
            results.append(result)
        return results

    async def _cmd_guest_file_open(self, path: str, mode: str = "r") -> int:
        if path not in self.files:
            raise ValueError(f"failed to open file '{path}' (mode: '{mode}'): No such file or directory")
        handle = len(self._handles) + 1000
        self._handles[handle] = (self.files[path].encode(), 0)
        return handle

    async def _cmd_guest_file_read(self, handle: int, count: int = 4096) -> dict[str, Any]:
        data, pos = self._handles[handle]
        chunk = data[pos:pos + count]
        self._handles[handle] = (data, pos + len(chunk))
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": pos + len(chunk) >= len(data)}

    async def _cmd_guest_file_close(self, handle: int) -> dict[str, Any]:
        self._handles.pop(handle)
        return {}


@dataclass
class FakeVM:
    """One guest: its agent and its monitor."""

    name: str
    agent: FakeAgent
    monitor: FakeMonitor

    def hot_add_dimm(self, device: str, first: int, count: int) -> None:
        """QEMU plugs a pc-dimm and the guest's kernel creates its blocks (offline); no event yet."""
        self.monitor.plug_dimm(device, first, count, self.agent.block_size)
        self.agent.add(range(first, first + count))

    def table(self, qmp: bool = True, port_id: str = "qgaport") -> dict[str, str]:
        """Its ``[[plugins.qga.guest]]`` table."""
        row = {"name": self.name, "qga": str(self.agent.path)}
        if qmp:
            row.update(qmp=str(self.monitor.path), port_id=port_id)
        return row


@asynccontextmanager
async def fake_vms(directory: Path, count: int = 1) -> AsyncIterator[list[FakeVM]]:
    """``count`` fake guests serving in ``directory`` until the block ends."""
    vms = [FakeVM(f"vm{i}", FakeAgent(directory / f"vm{i}-qga.sock"), FakeMonitor(directory / f"vm{i}-qmp.sock"))
           for i in range(count)]
    async with anyio.create_task_group() as tg:
        for vm in vms:
            _guest_files(vm.agent)
            await vm.agent.serve(tg)
            await vm.monitor.serve(tg)
        yield vms
        tg.cancel_scope.cancel()


def _guest_files(agent: FakeAgent) -> None:
    agent.files["/proc/meminfo"] = "MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n"
    agent.files["/sys/devices/system/memory/auto_online_blocks"] = "offline\n"


class VMDirs:
    """Guests in ``root/<name>/`` (``qga.sock``, ``hotplugd-qmp.sock``), as a hypervisor manager lays
    them out; the test starts and stops them. A stopped guest's sockets are removed, as QEMU does."""

    def __init__(self, root: Path, tg: TaskGroup) -> None:
        self.root = root
        self._tg = tg
        self._scopes: dict[str, anyio.CancelScope] = {}
        self.vms: dict[str, FakeVM] = {}

    async def start(self, name: str) -> FakeVM:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        vm = FakeVM(name, FakeAgent(directory / "qga.sock"), FakeMonitor(directory / "hotplugd-qmp.sock"))
        _guest_files(vm.agent)
        self._scopes[name] = await self._tg.start(self._serve, vm)
        self.vms[name] = vm
        return vm

    async def _serve(self, vm: FakeVM, *, task_status: TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                await vm.agent.serve(tg)
                await vm.monitor.serve(tg)
                task_status.started(scope)

    def stop(self, name: str) -> None:
        """The guest's QEMU exits: its sockets close and disappear (its directory may stay)."""
        self._scopes.pop(name).cancel()
        vm = self.vms.pop(name)
        vm.agent.path.unlink(missing_ok=True)
        vm.monitor.path.unlink(missing_ok=True)


@asynccontextmanager
async def vm_dirs(root: Path) -> AsyncIterator[VMDirs]:
    """A directory of guests (see :class:`VMDirs`), every guest stopped when the block ends."""
    async with anyio.create_task_group() as tg:
        yield VMDirs(root, tg)
        tg.cancel_scope.cancel()
