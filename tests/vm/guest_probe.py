"""Guest-side measuring tools for the real-kernel scenarios and benchmarks. Runs INSIDE the guest.

Standalone (stdlib only, like :mod:`harness.agent`) and refuses to run unless the kernel command
line holds the test marker, so it can never time or online this machine's memory.

``online-wait``: bind a uevent socket, write ``--ready``, then wait until ``--count`` blocks that
did not exist at start are online. Completion is seen from the kernel's ``online`` uevents (no
polling cost while the onliner works) and confirmed by reading each new block's ``state``; a
quiet socket falls back to reading the states every ``--poll`` seconds. The result (JSON, guest
wall-clock times of the first/last add and online events, comparable with the timestamps of
hotplugd's log; the guest runs no NTP; ``online_at``, each new block's ``[index, time]`` when it
came online, in that order) is written to ``--out``, a
FIFO the host reads with ``cat`` through the agent: the host's clock stops when that ``cat`` ends.

``writers``: online the given blocks by writing ``online`` to their ``state`` from N threads
(block ``i`` goes to thread ``i mod N``) and report the total time and each write's latency.

``naive-onliner``: the least a userspace onliner can do, as a reference for the benchmark: one
thread reads uevents and writes ``online`` to each added block's ``state`` at once.

``kill-on-online``: bind a uevent socket, write ``--ready``, then SIGKILL process ``--pid``, or
every process named ``--comm``, at the first ``online`` event of a block that did not exist at
start: a kill that lands in the middle of an onlining, which a round trip from the host would miss.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

MARKER = "hotplugd.vmtest=1"
MEMORY = Path("/sys/devices/system/memory")
NETLINK_KOBJECT_UEVENT = 15
SO_RCVBUFFORCE = 33


def require_marker(cmdline: str = "/proc/cmdline") -> None:
    """Exit 2 unless this is a test guest (the marker is on the kernel command line)."""
    try:
        words = Path(cmdline).read_text().split()
    except OSError:
        words = []
    if MARKER not in words:
        print(f"guest_probe: {MARKER!r} is not on the kernel command line: refusing to run", file=sys.stderr)
        raise SystemExit(2)


def present() -> set[int]:
    return {int(name[6:]) for name in os.listdir(MEMORY) if name.startswith("memory") and name[6:].isdigit()}


def state(index: int) -> str:
    try:
        return (MEMORY / f"memory{index}" / "state").read_text().strip()
    except OSError:
        return "gone"


def parse_uevent(data: bytes) -> tuple[str, int] | None:
    """(action, block index) of a kernel memory block uevent, else None."""
    fields = data.split(b"\0")
    header = fields[0].decode(errors="replace")
    action, _, devpath = header.partition("@")
    prefix = "/devices/system/memory/memory"
    if not devpath.startswith(prefix) or not devpath[len(prefix):].isdigit():
        return None
    return action, int(devpath[len(prefix):])


class OnlineWait:
    """Counts new blocks coming online, from uevents, and confirms from sysfs."""

    def __init__(self, count: int, poll: float) -> None:
        self.count = count
        self.poll = poll
        self.before = present()
        self.added: set[int] = set()
        self.online: set[int] = set()
        self.online_at: dict[int, float] = {}  # block -> guest time of its online event (or of the read that saw it)
        self.times: dict[str, float] = {}
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            pass
        self.sock.bind((0, 1))

    def _stamp(self, first: str, last: str) -> None:
        now = time.time()
        self.times.setdefault(first, now)
        self.times[last] = now

    def _confirmed(self) -> bool:
        """Enough new blocks online according to sysfs (read only when the events say so)."""
        new = present() - self.before
        online = {i for i in new if state(i) == "online"}
        now = time.time()
        for index in online - self.online:  # online without its event seen (yet)
            self.online_at.setdefault(index, now)
        self.online |= online
        return len(online) >= self.count

    def run(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(self.poll)
        done = False
        while not done and time.monotonic() < deadline:
            try:
                event = parse_uevent(self.sock.recv(1 << 16))
            except TimeoutError:
                done = self._confirmed()
                continue
            if event is None or event[1] in self.before:
                continue
            action, index = event
            if action == "add":
                self.added.add(index)
                self._stamp("first_add", "last_add")
            elif action == "online":
                self.online.add(index)
                self._stamp("first_online", "last_online")
                self.online_at.setdefault(index, self.times["last_online"])
                if len(self.online) >= self.count:
                    done = self._confirmed()
        end = time.time()
        online_at = sorted(self.online_at.items(), key=lambda item: item[1])
        return {"ok": done, "count": self.count, "online": len(self.online), "added": len(self.added),
                "end": end, **self.times, "online_at": [[i, round(t, 6)] for i, t in online_at]}


def cmd_online_wait(args: argparse.Namespace) -> int:
    waiter = OnlineWait(args.count, args.poll)
    Path(args.ready).write_text(f"{os.getpid()}\n")
    result = waiter.run(args.timeout)
    with open(args.out, "w") as out:  # a FIFO: blocks until the host's reader opens it
        out.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


def online_one(index: int, value: str) -> float:
    """Write ``value`` to one block's state; the seconds the write took."""
    fd = os.open(MEMORY / f"memory{index}" / "state", os.O_WRONLY)
    try:
        t0 = time.monotonic()
        os.write(fd, value.encode())
        return time.monotonic() - t0
    finally:
        os.close(fd)


def cmd_writers(args: argparse.Namespace) -> int:
    indices = [int(i) for i in args.indices.split(",")]
    lanes: list[list[int]] = [indices[t::args.threads] for t in range(args.threads)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def lane(blocks: list[int]) -> None:
        for index in blocks:
            try:
                seconds = online_one(index, args.value)
            except OSError as exc:
                with lock:
                    errors.append(f"memory{index}: {exc}")
                continue
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=lane, args=(blocks,)) for blocks in lanes]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.monotonic() - t0
    online = sum(1 for i in indices if state(i) == "online")
    print(json.dumps({"threads": args.threads, "blocks": len(indices), "online": online, "seconds": total,
                      "write_median": statistics.median(latencies) if latencies else None,
                      "write_max": max(latencies, default=None), "errors": errors}))
    return 0 if online == len(indices) and not errors else 1


def cmd_naive_onliner(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    sock.bind((0, 1))
    Path(args.ready).write_text(f"{os.getpid()}\n")
    while True:
        event = parse_uevent(sock.recv(1 << 16))
        if event is not None and event[0] == "add":
            try:
                online_one(event[1], "online")
            except OSError:  # already online, or gone
                pass


def cmd_kill_on_online(args: argparse.Namespace) -> int:
    before = present()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)  # a burst of add events must not overflow it
    sock.bind((0, 1))
    sock.settimeout(args.timeout)
    Path(args.ready).write_text(f"{os.getpid()}\n")
    while True:
        try:
            event = parse_uevent(sock.recv(1 << 16))
        except TimeoutError:
            print(f"guest_probe: no new block came online within {args.timeout} s", file=sys.stderr)
            return 1
        if event is not None and event[0] == "online" and event[1] not in before:
            targets = [args.pid] if args.pid is not None else named(args.comm)
            killed = [pid for pid in targets if _kill(pid)]
            print(json.dumps({"block": event[1], "killed": killed}))
            return 0 if killed else 1


def named(comm: str) -> list[int]:
    """The pids of the processes whose ``comm`` is ``comm``."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                pids.append(int(entry))
        except OSError:  # gone meanwhile
            pass
    return pids


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guest_probe")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("online-wait", help="wait until COUNT new blocks are online")
    wait.add_argument("--count", type=int, required=True)
    wait.add_argument("--ready", required=True, help="written once the uevent socket is bound")
    wait.add_argument("--out", required=True, help="where the JSON result goes (a FIFO the host reads)")
    wait.add_argument("--timeout", type=float, default=120.0)
    wait.add_argument("--poll", type=float, default=0.05, help="read states when no event came for this long")
    wait.set_defaults(func=cmd_online_wait)
    writers = sub.add_parser("writers", help="online blocks from N threads")
    writers.add_argument("--threads", type=int, required=True)
    writers.add_argument("--indices", required=True, help="comma-separated block numbers")
    writers.add_argument("--value", default="online")
    writers.set_defaults(func=cmd_writers)
    naive = sub.add_parser("naive-onliner", help="online every added block at once, from one thread")
    naive.add_argument("--ready", required=True, help="written once the uevent socket is bound")
    naive.set_defaults(func=cmd_naive_onliner)
    kill = sub.add_parser("kill-on-online", help="SIGKILL a process at the first online event of a new block")
    target = kill.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int, help="the process to kill")
    target.add_argument("--comm", help="the name of the processes to kill, e.g. qemu-ga")
    kill.add_argument("--ready", required=True, help="written once the uevent socket is bound")
    kill.add_argument("--timeout", type=float, default=120.0)
    kill.set_defaults(func=cmd_kill_on_online)
    args = parser.parse_args(argv)
    require_marker()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
