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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import GiB, Guest, GuestError

PROBE = Path(__file__).resolve().parent / "guest_probe.py"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Workload:
    """A hot-add: ``kind`` is ``dimm`` (one pc-dimm of ``size``) or ``virtio-mem`` (grow by ``size``)."""

    kind: str
    size: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.size // GiB} GiB" if self.kind == "dimm" else f"virtio-mem +{self.size // GiB} GiB"

    def prepare(self, guest: Guest) -> Callable[[], None]:
        """Do what is not part of the hot-add (create the DIMM's memory backend); return the hot-add."""
        if self.kind == "dimm":
            name = f"bench{next(_ids)}"
            guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram", "id": f"{name}-mem",
                                               "size": self.size})
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


def time_online(guest: Guest, workload: Workload, timeout: float = 180) -> Timing:
    """Hot-add ``workload`` and time it until all of its blocks are online (GuestError if they never are)."""
    n = next(_ids)
    fifo, ready = f"/run/probe-{n}.fifo", f"/run/probe-{n}.ready"
    count = workload.size // guest.agent.block_size()
    hot_add = workload.prepare(guest)
    guest.agent.run(["mkfifo", fifo])
    probe = guest.agent.spawn([guest.config.python, str(PROBE), "online-wait", "--count", str(count),
                               "--ready", ready, "--out", fifo, "--timeout", str(timeout)])
    guest.agent.wait_path(ready, 60)
    t0 = time.perf_counter()
    hot_add()
    out = guest.agent.run(["cat", fifo], timeout=timeout + 30)
    seconds = time.perf_counter() - t0
    done = probe.wait(30)
    result = json.loads(out.stdout)
    if not result["ok"] or done.returncode != 0:
        raise GuestError(f"{workload.label}: not all {count} blocks online within {timeout} s: {result} "
                         f"{done.stderr[-2000:]}")
    return Timing(workload, seconds, result)
