"""The host side of the guest agent's RPC (see :mod:`harness.agent` for the protocol)."""

from __future__ import annotations

import itertools
import json
import select
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Any

from .errors import AgentError, GuestError

#: Extra host-side patience on top of a request's own guest-side timeout.
RPC_MARGIN = 30.0

Command = str | Sequence[str]


@dataclass(frozen=True)
class CommandResult:
    """The outcome of a guest command; ``returncode`` is None if it had not exited."""

    argv: Command
    returncode: int | None
    stdout: str
    stderr: str
    elapsed: float = 0.0
    timed_out: bool = False

    def check(self) -> CommandResult:
        """Return self, or raise :class:`GuestError` unless the command exited 0."""
        if self.returncode != 0:
            raise GuestError(f"guest command {self.argv!r} exited {self.returncode}"
                             f"{' (timed out)' if self.timed_out else ''}:\n{self.stdout}{self.stderr}")
        return self


@dataclass(frozen=True)
class MemoryBlock:
    """One ``/sys/devices/system/memory/memoryN`` of the guest."""

    index: int
    state: str
    valid_zones: tuple[str, ...]
    node: int | None

    @property
    def online(self) -> bool:
        return self.state == "online"

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> MemoryBlock:
        return cls(raw["index"], raw["state"], tuple(raw["valid_zones"]), raw["node"])


@dataclass(frozen=True)
class WaitResult:
    """The outcome of :meth:`AgentClient.wait_blocks`; ``elapsed`` was measured in the guest."""

    ok: bool
    elapsed: float
    blocks: list[MemoryBlock]


class AgentClient:
    """A connection to the agent over QEMU's ``ctl`` virtio-serial socket."""

    def __init__(self, path: Path, is_alive: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        self.hello: dict[str, Any] = {}
        self._is_alive = is_alive
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buf = b""
        self._ids = itertools.count(1)

    def connect(self, timeout: float = 10) -> None:
        """Connect to the socket (QEMU creates it at start-up, before the guest runs)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock.connect(str(self.path))
                return
            except OSError as exc:
                if time.monotonic() > deadline or not self._is_alive():
                    raise GuestError(f"cannot connect to the agent socket {self.path}: {exc}") from exc
                time.sleep(0.05)

    def wait_hello(self, timeout: float) -> dict[str, Any]:
        """Wait for the agent's greeting, i.e. for the guest to have booted."""
        msg = self._receive(time.monotonic() + timeout, "the agent's hello (guest boot)")
        if msg.get("event") != "hello":
            raise GuestError(f"expected the agent's hello on {self.path}, got {msg}")
        self.hello = msg
        return msg

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\n" not in self._buf:
            if not self._is_alive():
                raise GuestError(f"QEMU exited while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"timed out waiting for {what} on {self.path}")
            ready, _, _ = select.select([self._sock], [], [], min(left, 0.5))
            if ready:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise GuestError(f"agent socket {self.path} closed while waiting for {what}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def call(self, method: str, rpc_timeout: float = RPC_MARGIN, **params: Any) -> Any:
        """Call ``method`` in the guest and return its result; raise :class:`AgentError` on error."""
        rid = next(self._ids)
        self._sock.sendall(json.dumps({"id": rid, "method": method, "params": params}).encode() + b"\n")
        deadline = time.monotonic() + rpc_timeout
        while True:
            reply = self._receive(deadline, f"the reply to {method!r}")
            if reply.get("id") == rid:
                break
        if "error" in reply:
            err = reply["error"]
            raise AgentError(method, err["type"], err["message"], err.get("traceback", ""))
        return reply["result"]

    # -- commands ------------------------------------------------------------------------------

    def run(self, cmd: Command, *, timeout: float = 60, check: bool = True, env: dict[str, str] | None = None,
            cwd: str | None = None, input: str | None = None) -> CommandResult:
        """Run ``cmd`` (argv, or a string for ``/bin/sh -c``) in the guest and wait for it."""
        r = self.call("run", rpc_timeout=timeout + RPC_MARGIN, cmd=_wire(cmd), timeout=timeout, env=env,
                      cwd=cwd, input=input)
        result = CommandResult(cmd, r["returncode"], r["stdout"], r["stderr"], r["elapsed"], r["timed_out"])
        return result.check() if check else result

    def spawn(self, cmd: Command, *, env: dict[str, str] | None = None, cwd: str | None = None) -> GuestProcess:
        """Start ``cmd`` in the background in the guest; its output is kept in the guest's ``/run``."""
        r = self.call("spawn", cmd=_wire(cmd), env=env, cwd=cwd)
        return GuestProcess(self, r["handle"], r["pid"], cmd)

    # -- files ---------------------------------------------------------------------------------

    def read_file(self, path: str) -> str:
        return str(self.call("read_file", path=path)["data"])

    def write_file(self, path: str, data: str) -> None:
        self.call("write_file", path=path, data=data)

    def wait_path(self, path: str, timeout: float = 30) -> float:
        """Wait until ``path`` exists in the guest; return the seconds waited."""
        r = self.call("wait_path", rpc_timeout=timeout + RPC_MARGIN, path=path, timeout=timeout)
        if not r["ok"]:
            raise GuestError(f"{path} did not appear in the guest within {timeout} s")
        return float(r["elapsed"])

    # -- memory blocks -------------------------------------------------------------------------

    def memory_blocks(self) -> list[MemoryBlock]:
        """The guest's memory blocks, sorted by index."""
        return [MemoryBlock.from_wire(b) for b in self.call("memory_blocks")["blocks"]]

    def block_size(self) -> int:
        return int(self.call("memory_blocks")["block_size"])

    def wait_blocks(self, *, state: str | None = None, min_count: int = 0, max_count: int | None = None,
                    indices: Iterable[int] | None = None, exclude: Iterable[int] = (), timeout: float = 30,
                    interval: float = 0.01, check: bool = True) -> WaitResult:
        """Poll in the guest until ``min_count`` to ``max_count`` blocks are selected, all in ``state``.

        Selected: those in ``indices`` (all when None) and not in ``exclude``. Typical uses: note
        ``before = {b.index for b in memory_blocks()}``, hot-add, then
        ``wait_blocks(exclude=before, min_count=8, state="online")``; after a virtio-mem shrink,
        ``wait_blocks(exclude=before, max_count=0)``. ``check=False`` returns instead of raising
        :class:`GuestError` on timeout.
        """
        r = self.call("wait_blocks", rpc_timeout=timeout + RPC_MARGIN, state=state, min_count=min_count,
                      max_count=max_count, indices=None if indices is None else sorted(indices),
                      exclude=sorted(exclude), timeout=timeout, interval=interval)
        result = WaitResult(r["ok"], r["elapsed"], [MemoryBlock.from_wire(b) for b in r["blocks"]])
        if check and not result.ok:
            states = {b.index: b.state for b in result.blocks}
            raise GuestError(f"after {timeout} s: wanted {min_count} to {max_count} blocks in state {state!r}, "
                             f"got {states}")
        return result

    def close(self) -> None:
        self._sock.close()

    def __repr__(self) -> str:
        return f"<AgentClient {self.path} {'ready' if self.hello else 'waiting'}>"


def _wire(cmd: Command) -> str | list[str]:
    return cmd if isinstance(cmd, str) else [str(a) for a in cmd]


class GuestProcess:
    """A background process in the guest (from :meth:`AgentClient.spawn`)."""

    def __init__(self, client: AgentClient, handle: int, pid: int, argv: Command) -> None:
        self.client = client
        self.handle = handle
        self.pid = pid
        self.argv = argv

    def signal(self, sig: int = SIGTERM) -> bool:
        """Send ``sig``; False if the process had already exited."""
        return bool(self.client.call("signal", handle=self.handle, signum=int(sig))["sent"])

    def poll(self) -> CommandResult:
        """Its state now: ``returncode`` None while it runs, and its output so far."""
        return self.wait(0)

    def wait(self, timeout: float = 30) -> CommandResult:
        """Wait up to ``timeout`` s for it to exit; ``returncode`` is None if it did not."""
        r = self.client.call("wait", rpc_timeout=timeout + RPC_MARGIN, handle=self.handle, timeout=timeout)
        return CommandResult(self.argv, r["returncode"], r["stdout"], r["stderr"])

    def stop(self, sig: int = SIGTERM, timeout: float = 10) -> CommandResult:
        """Send ``sig``, wait up to ``timeout`` s, then SIGKILL if it still runs."""
        self.signal(sig)
        result = self.wait(timeout)
        if result.returncode is None:
            self.signal(SIGKILL)
            result = self.wait(10)
        return result

    def __repr__(self) -> str:
        return f"<GuestProcess #{self.handle} pid={self.pid} {self.argv!r}>"
