"""The guest-side agent: a line-delimited JSON RPC server on the ``ctl`` virtio-serial port.

Runs INSIDE the QEMU guest (``/usr/bin/python3 <repo>/tests/vm/harness/agent.py``, started by
the initramfs's ``/init``). Standalone: stdlib only, no package imports, so it runs under any
Python 3.11 the guest sees through the shared root.

Safety: it refuses to do anything unless the kernel command line holds :data:`MARKER`
(:func:`require_marker`); an :class:`Agent` cannot even be built without it, so nothing here
can touch this machine's memory if started by mistake on the host.

Protocol: the agent first sends ``{"event": "hello", ...}``; then each request
``{"id": N, "method": M, "params": {...}}`` gets ``{"id": N, "result": ...}`` or
``{"id": N, "error": {"type": T, "message": S, "traceback": TB}}``, one JSON object per line.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Must appear as a whole word on the kernel command line, or the agent refuses to run.
MARKER = "hotplugd.vmtest=1"
MEMORY_SYSFS = "/sys/devices/system/memory"
#: virtio_console accepts at most this much per write().
MAX_WRITE = 32 * 1024
#: Where background processes keep their output (a tmpfs in the guest).
PROC_DIR = "/run/vmtest/procs"
OUTPUT_LIMIT = 1024 * 1024


class MarkerMissing(RuntimeError):
    """The kernel command line lacks :data:`MARKER`: this is not a test guest."""


def require_marker(cmdline_path: str = "/proc/cmdline") -> None:
    """Raise :class:`MarkerMissing` unless ``cmdline_path`` holds :data:`MARKER` as a word."""
    try:
        words = Path(cmdline_path).read_text().split()
    except OSError as exc:
        raise MarkerMissing(f"cannot read {cmdline_path}: {exc}") from exc
    if MARKER not in words:
        raise MarkerMissing(f"{MARKER!r} is not on the kernel command line ({cmdline_path}): refusing to run")


def require_guest_mounts(mountinfo_path: str = "/proc/self/mountinfo") -> None:
    """Raise unless ``/sys`` and ``/proc`` are the kernel's own, not the host's seen over 9p."""
    fstypes: dict[str, str] = {}
    for line in Path(mountinfo_path).read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstypes[pre.split()[4]] = post.split()[0]
    for mountpoint, wanted in (("/sys", "sysfs"), ("/proc", "proc")):
        if fstypes.get(mountpoint) != wanted:
            raise MarkerMissing(f"{mountpoint} is {fstypes.get(mountpoint)!r}, not {wanted}: refusing to run")


# ---------------------------------------------------------------------------------------------
# Memory blocks
# ---------------------------------------------------------------------------------------------


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def list_memory_blocks(root: str = MEMORY_SYSFS) -> dict[str, Any]:
    """Describe every memory block under ``root``: index, state, valid_zones, node."""
    base = Path(root)
    numa = (base.parent / "node").is_dir()
    blocks: list[dict[str, Any]] = []
    for entry in base.glob("memory[0-9]*"):
        try:
            node = next((int(p.name[4:]) for p in entry.glob("node[0-9]*")), None)
        except FileNotFoundError:  # removed while we listed (virtio-mem shrinking)
            continue
        # A hot-added block is announced before the kernel links it to its node; until then
        # its nid is NUMA_NO_NODE and reading valid_zones oopses 6.1 (zone_for_pfn_range).
        registered = node is not None or not numa
        state = _read(entry / "state")
        if not state:  # gone in between
            continue
        blocks.append({
            "index": int(entry.name[6:]),
            "state": state,
            "valid_zones": _read(entry / "valid_zones").split() if registered else [],
            "node": node,
        })
    blocks.sort(key=lambda b: b["index"])
    size = _read(base / "block_size_bytes", "0")
    return {"block_size": int(size, 16), "blocks": blocks}


def select_blocks(blocks: list[dict[str, Any]], indices: list[int] | None, exclude: list[int]) -> list[dict[str, Any]]:
    """The blocks whose index is in ``indices`` (all when None) and not in ``exclude``."""
    wanted = None if indices is None else set(indices)
    skip = set(exclude)
    return [b for b in blocks if (wanted is None or b["index"] in wanted) and b["index"] not in skip]


def blocks_match(blocks: list[dict[str, Any]], state: str | None, min_count: int,
                 max_count: int | None = None) -> bool:
    """Between ``min_count`` and ``max_count`` blocks, all in ``state`` (each when given)."""
    return (min_count <= len(blocks) and (max_count is None or len(blocks) <= max_count)
            and (state is None or all(b["state"] == state for b in blocks)))


# ---------------------------------------------------------------------------------------------
# The RPC methods
# ---------------------------------------------------------------------------------------------


def _argv(cmd: str | list[str]) -> list[str]:
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    return env


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - OUTPUT_LIMIT))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Agent:
    """The RPC methods. Building one checks the marker; every method runs in the guest."""

    def __init__(self, cmdline_path: str = "/proc/cmdline", memory_root: str = MEMORY_SYSFS,
                 proc_dir: str = PROC_DIR) -> None:
        require_marker(cmdline_path)
        self.memory_root = memory_root
        self.proc_dir = Path(proc_dir)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._next = 1

    def methods(self) -> dict[str, Callable[..., Any]]:
        return {name[4:]: getattr(self, name) for name in dir(self) if name.startswith("rpc_")}

    def rpc_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "python": sys.executable, "version": platform.python_version(),
                "kernel": platform.release()}

    def rpc_run(self, cmd: str | list[str], timeout: float = 60, env: dict[str, str] | None = None,
                cwd: str | None = None, input: str | None = None) -> dict[str, Any]:
        """Run a command in the foreground; capture its output; kill it after ``timeout`` s."""
        start = time.monotonic()
        try:
            done = subprocess.run(_argv(cmd), input=(input or "").encode(), capture_output=True,
                                  timeout=timeout, env=_env(env), cwd=cwd)
            code, out, err, timed_out = done.returncode, done.stdout, done.stderr, False
        except subprocess.TimeoutExpired as exc:
            code, out, err, timed_out = None, exc.stdout or b"", exc.stderr or b"", True
        return {"returncode": code, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace"),
                "elapsed": time.monotonic() - start, "timed_out": timed_out}

    def rpc_spawn(self, cmd: str | list[str], env: dict[str, str] | None = None,
                  cwd: str | None = None) -> dict[str, Any]:
        """Start a command in the background; its output goes to files; returns a handle."""
        handle, self._next = self._next, self._next + 1
        self.proc_dir.mkdir(parents=True, exist_ok=True)
        with open(self.proc_dir / f"{handle}.out", "wb") as out, open(self.proc_dir / f"{handle}.err", "wb") as err:
            proc = subprocess.Popen(_argv(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=_env(env), cwd=cwd, start_new_session=True)
        self._procs[handle] = proc
        return {"handle": handle, "pid": proc.pid}

    def _proc(self, handle: int) -> subprocess.Popen[bytes]:
        try:
            return self._procs[handle]
        except KeyError:
            raise KeyError(f"no process with handle {handle}") from None

    def rpc_signal(self, handle: int, signum: int) -> dict[str, Any]:
        """Send ``signum`` to a background process; ``sent`` is false if it had already exited."""
        proc = self._proc(handle)
        if proc.poll() is not None:
            return {"sent": False}
        proc.send_signal(signum)
        return {"sent": True}

    def rpc_wait(self, handle: int, timeout: float = 0) -> dict[str, Any]:
        """Wait up to ``timeout`` s; ``returncode`` is None while the process still runs."""
        proc = self._proc(handle)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return {"returncode": code, "pid": proc.pid, "stdout": _tail(self.proc_dir / f"{handle}.out"),
                "stderr": _tail(self.proc_dir / f"{handle}.err")}

    def rpc_read_file(self, path: str, limit: int = OUTPUT_LIMIT) -> dict[str, Any]:
        with open(path, "rb") as f:
            return {"data": f.read(limit).decode(errors="replace")}

    def rpc_write_file(self, path: str, data: str) -> dict[str, Any]:
        with open(path, "w") as f:
            f.write(data)
        return {}

    def rpc_memory_blocks(self) -> dict[str, Any]:
        return list_memory_blocks(self.memory_root)

    def rpc_wait_blocks(self, state: str | None = None, min_count: int = 0, max_count: int | None = None,
                        indices: list[int] | None = None, exclude: list[int] | None = None,
                        timeout: float = 30, interval: float = 0.01) -> dict[str, Any]:
        """Poll the blocks until the selected ones number ``min_count`` to ``max_count``, all in ``state``.

        Returns ``ok``, the ``elapsed`` seconds (measured in the guest) and the selected blocks.
        """
        start = time.monotonic()
        while True:
            selected = select_blocks(list_memory_blocks(self.memory_root)["blocks"], indices, exclude or [])
            elapsed = time.monotonic() - start
            ok = blocks_match(selected, state, min_count, max_count)
            if ok or elapsed >= timeout:
                return {"ok": ok, "elapsed": elapsed, "blocks": selected}
            time.sleep(interval)

    def rpc_wait_path(self, path: str, timeout: float = 30, interval: float = 0.01) -> dict[str, Any]:
        """Wait until ``path`` exists (e.g. a daemon's ready file)."""
        start = time.monotonic()
        while not os.path.exists(path):
            if time.monotonic() - start >= timeout:
                return {"ok": False, "elapsed": time.monotonic() - start}
            time.sleep(interval)
        return {"ok": True, "elapsed": time.monotonic() - start}

    def close(self) -> None:
        """Kill every background process still running."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; errors become an ``error`` object, never an exception."""
        rid, method = request.get("id"), request.get("method", "")
        try:
            func = self.methods().get(method)
            if func is None:
                raise LookupError(f"unknown method {method!r}")
            return {"id": rid, "result": func(**request.get("params", {}))}
        except Exception as exc:  # reported to the host, which raises AgentError
            return {"id": rid, "error": {"type": type(exc).__name__, "message": str(exc),
                                         "traceback": traceback.format_exc()}}


# ---------------------------------------------------------------------------------------------
# The virtio-serial channel
# ---------------------------------------------------------------------------------------------


def find_port(name: str = "ctl", class_dir: str = "/sys/class/virtio-ports") -> str:
    """The ``/dev/vportNpM`` device whose virtio-serial port name is ``name``."""
    for port in sorted(Path(class_dir).glob("vport*")):
        if _read(port / "name") == name:
            return f"/dev/{port.name}"
    raise FileNotFoundError(f"no virtio-serial port named {name!r} in {class_dir}")


class Channel:
    """Line-delimited JSON over a character device, writing at most :data:`MAX_WRITE` at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        data = memoryview(json.dumps(obj).encode() + b"\n")
        while data:
            try:
                n = os.write(self.fd, data[:MAX_WRITE])
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EINTR):
                    raise
                select.select([], [self.fd], [], 0.1)
                continue
            data = data[n:]

    def receive(self) -> dict[str, Any]:
        """The next request; waits while the host is not connected (reads give EOF then)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                time.sleep(0.05)
                continue
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        request: dict[str, Any] = json.loads(line)
        return request


def serve(agent: Agent, channel: Channel) -> None:
    """Send the hello, then answer requests until a ``shutdown`` request."""
    channel.send({"event": "hello", **agent.rpc_ping()})
    while True:
        request = channel.receive()
        if request.get("method") == "shutdown":
            agent.close()
            channel.send({"id": request.get("id"), "result": {}})
            return
        channel.send(agent.handle(request))


def main(argv: list[str] | None = None) -> int:
    """Entry point in the guest. ``--cmdline PATH`` overrides ``/proc/cmdline`` (for tests)."""
    args = sys.argv[1:] if argv is None else argv
    cmdline = args[args.index("--cmdline") + 1] if "--cmdline" in args else "/proc/cmdline"
    try:
        require_marker(cmdline)
        require_guest_mounts()
        agent = Agent(cmdline)
        fd = os.open(find_port(), os.O_RDWR)
    except (MarkerMissing, OSError) as exc:
        print(f"vmtest agent: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(agent, Channel(fd))
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
