"""Time a hot-add in a guest: from the QMP command to every new block online.

The clock is this machine's: it starts right before the QMP command that adds the memory
(``device_add`` of a DIMM whose backend already exists, or virtio-mem's ``requested-size``)
and stops when the guest says the last block is online. The guest side is
``guest_probe.py online-wait``, bound to the uevent socket before the hot-add: it sees the
blocks come online from the kernel's ``online`` events (no polling load on the guest while the
onliner works), confirms from sysfs, and writes its result into a FIFO that a ``cat`` started
by the agent is blocked on; that ``cat`` ending is the stop. The probe also reports guest-side
times (first and last ``add`` and ``online`` events) for a breakdown.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import GiB, Guest, GuestError, GuestProcess

PROBE = Path(__file__).resolve().parent / "guest_probe.py"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Workload:
    """A hot-add: ``kind`` is ``dimm`` (one pc-dimm of ``size``) or ``virtio-mem`` (grow by ``size``).

    A ``file`` DIMM is backed by a sparse file in the guest's work dir on this machine's disk
    (``memory-backend-file``, ``share=on``) rather than by RAM: DIMMs far larger than this machine's
    memory cost only the pages the guest touches (its memmap, what it uses).
    """

    kind: str
    size: int
    file: bool = False

    @property
    def label(self) -> str:
        if self.kind == "dimm":
            return f"dimm {self.size // GiB} GiB" + (" (file)" if self.file else "")
        return f"virtio-mem +{self.size // GiB} GiB"

    def prepare(self, guest: Guest) -> Callable[[], None]:
        """Do what is not part of the hot-add (create the DIMM's memory backend); return the hot-add."""
        if self.kind == "dimm":
            name = f"bench{next(_ids)}"
            backend: dict[str, Any] = {"qom-type": "memory-backend-ram"}
            if self.file:
                backend = {"qom-type": "memory-backend-file", "mem-path": str(guest.workdir / f"{name}.mem"),
                           "share": True}
            guest.qmp.execute("object-add", **backend, id=f"{name}-mem", size=self.size)
            return lambda: guest.qmp.execute("device_add", driver="pc-dimm", id=name, memdev=f"{name}-mem")
        if self.kind == "virtio-mem":
            target = guest.qmp.virtio_mem_size() + self.size
            return lambda: guest.qmp.resize_virtio_mem(target)
        raise ValueError(f"unknown workload kind {self.kind!r}")


@dataclass(frozen=True)
class Timing:
    """One measured hot-add: ``seconds`` on this machine's clock, and the probe's guest-side view."""

    workload: Workload
    seconds: float
    probe: dict[str, Any]

    @property
    def tail(self) -> float | None:
        """Guest seconds from the last ``add`` event to the last block online: the onliner's own lag."""
        p = self.probe
        return p["end"] - p["last_add"] if "last_add" in p else None

    @property
    def adding(self) -> float | None:
        """Guest seconds from the first to the last ``add`` event: the kernel creating blocks."""
        p = self.probe
        return p["last_add"] - p["first_add"] if "first_add" in p else None


@dataclass
class Probe:
    """A guest armed for one hot-add: its probe waits for the workload's blocks to come online."""

    guest: Guest
    workload: Workload
    fifo: str
    proc: Any
    hot_add: Callable[[], None]
    count: int
    result: dict[str, Any] = field(default_factory=dict)

    def wait(self, timeout: float) -> float:
        """Block until the probe reports; this machine's ``perf_counter`` at that moment."""
        out = self.guest.agent.run(["cat", self.fifo], timeout=timeout + 30)
        done = time.perf_counter()
        finished = self.proc.wait(30)
        self.result = json.loads(out.stdout)
        if not self.result.get("ok") or finished.returncode != 0:
            raise GuestError(f"{self.workload.label}: not all {self.count} blocks online within {timeout} s: "
                             f"{self.result} {finished.stderr[-2000:]}")
        return done


def arm(guest: Guest, workload: Workload, timeout: float) -> Probe:
    """Create the workload's memory backend and start the probe in ``guest``, bound before the hot-add."""
    n = next(_ids)
    fifo, ready = f"/run/probe-{n}.fifo", f"/run/probe-{n}.ready"
    count = workload.size // guest.agent.block_size()
    hot_add = workload.prepare(guest)
    guest.agent.run(["mkfifo", fifo])
    proc = guest.agent.spawn([guest.config.python, str(PROBE), "online-wait", "--count", str(count),
                              "--ready", ready, "--out", fifo, "--timeout", str(timeout)])
    guest.agent.wait_path(ready, 60)
    return Probe(guest, workload, fifo, proc, hot_add, count)


def time_at_once(probes: Sequence[Probe], waiters: Executor, timeout: float) -> float:
    """Hot-add into every guest back to back; seconds until the last guest's last block is online."""
    t0 = time.perf_counter()
    for p in probes:
        p.hot_add()
    return max(f.result() for f in [waiters.submit(p.wait, timeout) for p in probes]) - t0


def time_one_after_another(probes: Sequence[Probe], timeout: float) -> float:
    """Hot-add into each guest once the previous one is all online; the sum of the times."""
    total = 0.0
    for p in probes:
        t0 = time.perf_counter()
        p.hot_add()
        total += p.wait(timeout) - t0
    return total


def time_online(guest: Guest, workload: Workload, timeout: float = 180) -> Timing:
    """Hot-add ``workload`` and time it until all of its blocks are online (GuestError if they never are)."""
    probe = arm(guest, workload, timeout)
    t0 = time.perf_counter()
    probe.hot_add()
    done = probe.wait(timeout)
    return Timing(workload, done - t0, probe.result)


def kill_on_online(guest: Guest, *, pid: int | None = None, comm: str | None = None) -> GuestProcess:
    """Arm ``guest_probe.py kill-on-online`` in ``guest`` (SIGKILL ``pid``, or every process named
    ``comm``, at the first ``online`` event of a new block); return once it listens. Its exit
    status is 0 when it killed."""
    ready = f"/run/kill-on-online-{next(_ids)}.ready"
    target = ["--pid", str(pid)] if pid is not None else ["--comm", str(comm)]
    killer = guest.agent.spawn([guest.config.python, str(PROBE), "kill-on-online", *target, "--ready", ready])
    guest.agent.wait_path(ready, 60)
    return killer
