"""A fake libvirt for the libvirt backend's unit tests: running domains whose guest agents answer from a model.

:class:`FakeLibvirt` is a :class:`~hotplugd_libvirt.hypervisor.Hypervisor`; its
connections are called in worker threads by the backend, as libvirt's are, so
the guests' state is guarded by a lock and a request can be held on a
``threading.Event`` (an agent that hangs, a ``guest-set-memory-blocks`` in
flight). Events are raised with :meth:`FakeLibvirt.emit`, delivered to every
open connection's sink as libvirt's thread would.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from hotplugd_guestagent.errors import AgentTimeout, AgentUnavailable, CommandFailed
from hotplugd_libvirt.hypervisor import (
    EVENT_STARTED,
    EVENT_STOPPED,
    AgentNotConnected,
    AgentState,
    Closed,
    ConnectionLost,
    DomainInfo,
    HypervisorEvent,
    Lifecycle,
    MemoryChanged,
    Sink,
)

BLOCK = 128 << 20
AUTO_ONLINE = "/sys/devices/system/memory/auto_online_blocks"


@dataclass
class FakeGuest:
    """One running domain and its guest (blocks: phys_index → online) and agent."""

    name: str
    blocks: dict[int, bool] = field(default_factory=dict)
    metadata: str | None = None
    agent_connected: bool = True
    auto_online: str = "offline"
    vcpus: int = 2
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    id: int = 1
    hang: threading.Event | None = None  # set: every request waits for it (the agent never answers)
    set_gate: threading.Event | None = None  # set: each guest-set-memory-blocks waits for it
    lie: bool = False  # success for every block, none onlined
    requests: list[dict[str, Any]] = field(default_factory=list)
    dimms: list[tuple[int, int]] = field(default_factory=list)  # (base, size) of each DIMM, alias dimm<i>

    def add(self, indices: range | list[int], online: bool = False) -> None:
        for i in indices:
            self.blocks[i] = online

    def online_indices(self) -> set[int]:
        return {i for i, online in self.blocks.items() if online}

    def set_calls(self) -> list[list[int]]:
        return [[b["phys-index"] for b in r["arguments"]["mem-blks"]] for r in self.requests
                if r["execute"] == "guest-set-memory-blocks"]

    def hold_sets(self) -> None:
        self.set_gate = threading.Event()

    def release_sets(self) -> None:
        if self.set_gate is not None:
            self.set_gate.set()


class FakeLibvirt:
    """libvirtd with its domains; ``up`` False refuses connections (stopped or restarting)."""

    def __init__(self, *guests: FakeGuest) -> None:
        self.guests: dict[str, FakeGuest] = {g.name: g for g in guests}
        self.up = True
        self.connections: list[FakeConnection] = []
        self.lock = threading.Lock()
        self.sets_in_flight = 0
        self.most_sets_in_flight = 0
        self.opened = 0

    def open(self, uri: str, sink: Sink) -> FakeConnection:
        if not self.up:
            raise ConnectionLost(f"libvirt {uri}: Failed to connect socket: Connection refused")
        self.opened += 1
        conn = FakeConnection(self, uri, sink)
        self.connections.append(conn)
        return conn

    def emit(self, event: HypervisorEvent) -> None:
        for conn in list(self.connections):
            if conn.open:
                conn.sink(event)

    # -- what a test does ----------------------------------------------------------------------

    def start(self, guest: FakeGuest) -> None:
        guest.id = max((g.id for g in self.guests.values()), default=0) + 1
        self.guests[guest.name] = guest
        self.emit(Lifecycle(guest.name, EVENT_STARTED, 0))

    def destroy(self, name: str) -> None:
        self.guests.pop(name)
        self.emit(Lifecycle(name, EVENT_STOPPED, 1))

    def hot_add(self, name: str, indices: range, create: bool = True) -> None:
        """A DIMM over ``indices``: libvirt raises DEVICE_ADDED (its XML has the DIMM); the guest creates its
        blocks offline (now, or later with :meth:`create` when ``create`` is False)."""
        guest = self.guests[name]
        guest.dimms.append((indices.start * BLOCK, len(indices) * BLOCK))
        if create:
            guest.add(indices)
        self.emit(MemoryChanged(name, f"memdimm{len(guest.dimms) - 1}"))

    def agent(self, name: str, connected: bool) -> None:
        self.guests[name].agent_connected = connected
        self.emit(AgentState(name, connected))

    def stop_daemon(self) -> None:
        """libvirtd stops: every connection closes (a Closed event, then every call fails)."""
        self.up = False
        for conn in self.connections:
            if conn.open:
                conn.open = False
                conn.sink(Closed(0))

    def start_daemon(self) -> None:
        self.up = True

    # -- the guests' agents, called from the backend's worker threads ----------------------------

    def command(self, domain: str, text: str, timeout: int) -> str:
        guest = self.guests.get(domain)
        if guest is None:
            raise AgentUnavailable(f"Domain not found: no domain with matching name '{domain}'")
        if not guest.agent_connected:
            raise AgentNotConnected("Guest agent is not responding: QEMU guest agent is not connected")
        request = json.loads(text)
        guest.requests.append(request)
        if guest.hang is not None and not guest.hang.wait(timeout):
            raise AgentTimeout("Guest agent is not responding: Guest agent not available for now")
        return json.dumps({"return": self._answer(guest, request["execute"], request.get("arguments", {}))})

    def _answer(self, guest: FakeGuest, command: str, args: dict[str, Any]) -> Any:
        if command == "guest-get-memory-blocks":
            return [{"phys-index": i, "online": on, "can-offline": True} for i, on in guest.blocks.items()]
        if command == "guest-get-memory-block-info":
            return {"size": BLOCK}
        if command == "guest-get-vcpus":
            return [{"logical-id": i, "online": True} for i in range(guest.vcpus)]
        if command == "guest-file-open":
            path = args["path"]
            if path.startswith("/sys/devices/system/memory/memory") and path.endswith("/state"):
                if int(path.split("/")[5].removeprefix("memory")) not in guest.blocks:
                    raise CommandFailed(command, "libvirt", f"failed to open file '{path}' (mode: 'r')")
            return {"/proc/meminfo": 1, AUTO_ONLINE: 2}.get(path, 3)
        if command == "guest-file-read":
            text = {1: "MemAvailable:    1048576 kB\n", 2: guest.auto_online + "\n"}.get(args["handle"], "")
            return {"count": len(text), "buf-b64": base64.b64encode(text.encode()).decode(), "eof": True}
        if command == "guest-file-close":
            return {}
        if command == "guest-set-memory-blocks":
            return self._set(guest, [b["phys-index"] for b in args["mem-blks"]])
        raise AssertionError(f"unexpected agent command {command}")

    def _set(self, guest: FakeGuest, indices: list[int]) -> list[dict[str, Any]]:
        with self.lock:
            self.sets_in_flight += 1
            self.most_sets_in_flight = max(self.most_sets_in_flight, self.sets_in_flight)
        try:
            if guest.set_gate is not None:
                guest.set_gate.wait(30)
            answers = []
            for i in indices:
                if i not in guest.blocks:
                    answers.append({"phys-index": i, "response": "not-found", "error-code": 2})
                    continue
                if not guest.lie:
                    guest.blocks[i] = True
                answers.append({"phys-index": i, "response": "success"})
            return answers
        finally:
            with self.lock:
                self.sets_in_flight -= 1


class FakeConnection:
    def __init__(self, libvirt: FakeLibvirt, uri: str, sink: Sink) -> None:
        self.libvirt = libvirt
        self.uri = uri
        self.sink = sink
        self.open = True

    def _check(self) -> None:
        if not self.open or not self.libvirt.up:
            raise ConnectionLost("libvirt: internal error: client socket is closed")

    def running_domains(self, metadata_uri: str) -> list[DomainInfo]:
        self._check()
        return [DomainInfo(g.name, g.uuid, g.id, g.metadata if metadata_uri else None)
                for g in list(self.libvirt.guests.values())]

    def domain_xml(self, domain: str) -> str:
        self._check()
        guest = self.libvirt.guests[domain]
        dimms = "".join(f"<memory model='dimm'><target><size unit='KiB'>{size // 1024}</size><node>0</node>"
                        f"</target><alias name='dimm{i}'/><address type='dimm' slot='{i}' base='{hex(base)}'/>"
                        f"</memory>" for i, (base, size) in enumerate(guest.dimms))
        return f"<domain type='qemu'><name>{domain}</name><devices>{dimms}</devices></domain>"

    def agent_command(self, domain: str, command: str, timeout: int) -> str:
        self._check()
        reply = self.libvirt.command(domain, command, timeout)
        self._check()  # libvirtd went away meanwhile: the guest did the work, the reply is lost
        return reply

    def close(self) -> None:
        self.open = False
