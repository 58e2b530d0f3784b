"""The daemon's own CPU per block on the sysfs path, against a bare loop doing the same I/O.

Under QEMU's TCG the guest runs Python some 30 times slower than this machine,
so the daemon's CPU per block is what decides how close hotplugd gets to the
kernel's own onlining there (``bench/README.md``, "The floor: a C loop"). This
measures it here, where it is cheap to repeat: ``hotplugd run --backend sysfs``
in-process over a fake sysfs tree of plain files (``FakeSysfs``, its writer
process writing them), with every block's ``online`` uevent fed back the
moment the block is reported, as the kernel sends it. Three workloads:

- ``burst``: a DIMM's adds all at once (N events in the socket, then the phases);
- ``serial``: one add at a time, the next only once the last is online (virtio-mem);
- ``kernel``: the plan's default on mainline, the kernel onlining: a DIMM's adds all at once,
  then the kernel's walk (each block set online in the tree and its ``online`` uevent fed, one
  every ``--pace`` seconds), the daemon reading back and counting each block (its proof).

The baseline, run in the same invocation and the same process, is a bare loop
over the same tree and datagrams: parse the add with the daemon's own parser,
write ``online`` to ``state``, read ``valid_zones`` back, parse the ``online``
uevent. The ratio is the daemon's CPU per block over the bare loop's. The
daemon's figure leaves out its writer process (the writes and read-backs) while
the bare loop's includes them: the ratio is the daemon's own work per block
against the whole of the bare I/O.

    .venv/bin/python bench/sysfs_cpu.py [--blocks N] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio

from hotplugd import hookimpl
from hotplugd.config import from_mapping
from hotplugd.daemon import Daemon
from hotplugd.model import BlockReport, Executor
from hotplugd.observe.logs import configure
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import wait_until
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs
from hotplugd_sysfs.uevent import parse


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Kernel:
    """Plays the kernel's side: each reported block's ``online`` uevent goes back into the daemon."""

    def __init__(self, fake: FakeSysfs) -> None:
        self.fake = fake
        self.feed: Callable[[bytes], None] = lambda data: None
        self.reported = 0
        self.changed = anyio.Event()

    @hookimpl
    def hotplugd_block_outcome(self, report: BlockReport) -> None:
        self.feed(self.fake.uevent("online", report.block.index))
        self.reported += 1
        self.changed.set()

    async def until(self, count: int) -> None:
        while self.reported < count:
            await self.changed.wait()
            self.changed = anyio.Event()


def offline_blocks(fake: FakeSysfs, blocks: int) -> list[bytes]:
    """``blocks`` new offline blocks and their ``add`` uevents.

    One zone each in ``valid_zones``: the writer process writes these plain files as
    they are (no kernel behind them to change ``state``), and one listed zone is
    what an online block shows, so its answer settles without a read-back.
    """
    for index in range(blocks):
        fake.add_block(index, zones=("Normal",))
    return [fake.uevent("add", index) for index in range(blocks)]


def daemon_run(blocks: int, mode: str, pace: float = 0.001) -> float:
    """The daemon's CPU seconds per block, adds to last report (``kernel``: to the last block proven)."""
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeSysfs(Path(tmp))
        kernel = Kernel(fake)
        # burst and serial: hotplugd onlining itself (the plan would have the fake kernel online, which only
        # onlines in its own walk); kernel: the plan's default, the kernel onlining and hotplugd proving
        onliner = "auto" if mode == "kernel" else "hotplugd"
        data = {"backend": "sysfs", "metrics": {"enabled": False}, "scheduler": {"onliner": onliner},
                "plugins": {"sysfs": fake.options()}}
        pm = make_manager(load_entry_points=True, extra=[("bench-kernel", kernel)], environ={})
        daemon = Daemon(from_mapping(data), pm, metrics=Metrics(), notifier=Notifier({}), serve_metrics=False)
        spent = 0.0

        async def main() -> None:
            nonlocal spent
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                backend = daemon.backend
                adds = offline_blocks(fake, blocks)
                if mode == "kernel":
                    spent = await kernel_walk(daemon, fake, adds, kernel, pace)
                    tg.cancel_scope.cancel()
                    return
                kernel.feed = backend.feed
                start = cpu()
                if mode == "burst":
                    for data in adds:
                        backend.feed(data)
                    await kernel.until(blocks)
                else:
                    for n, data in enumerate(adds, 1):
                        backend.feed(data)
                        await kernel.until(n)
                # the last phase's results are counted once it returns, after its last report
                await wait_until(lambda: daemon.scheduler.onlined == blocks, what="the last phase's end")
                spent = cpu() - start
                tg.cancel_scope.cancel()

        anyio.run(main)
        if mode == "kernel":
            if daemon.scheduler.onlined or kernel.reported != blocks:
                raise SystemExit(f"the daemon proved {kernel.reported} of {blocks} blocks, onlined "
                                 f"{daemon.scheduler.onlined} itself")
            return spent / blocks
        if daemon.scheduler.onlined != blocks:
            raise SystemExit(f"the daemon onlined {daemon.scheduler.onlined} of {blocks} blocks")
        return spent / blocks


async def kernel_walk(daemon: Daemon, fake: FakeSysfs, adds: list[bytes], kernel: Kernel, pace: float) -> float:
    """The kernel's auto-online of a DIMM: every add, then each block onlined in turn (its uevent fed,
    ``pace`` seconds apart); the daemon's CPU seconds until it has proven every block."""
    backend = daemon.backend
    if daemon.plan.executor is not Executor.KERNEL:
        raise SystemExit(f"the plan does not have the kernel online: {daemon.plan.reason}")
    start = cpu()
    for data in adds:
        backend.feed(data)
    await wait_until(lambda: len(daemon.scheduler.host.queue) == len(adds), what="every add queued")
    played = 0.0  # the fake kernel's own CPU, in this process too: not the daemon's
    for index in range(len(adds)):
        t0 = cpu()
        fake.set_state(index, "online", ("Normal",))
        event = fake.uevent("online", index)
        played += cpu() - t0
        backend.feed(event)
        await anyio.sleep(pace)
    await kernel.until(len(adds))
    return cpu() - start - played


def baseline_run(blocks: int) -> float:
    """A bare loop's CPU seconds per block: parse the add, write state, read valid_zones, parse the online."""
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeSysfs(Path(tmp))
        adds = offline_blocks(fake, blocks)
        memory = str(fake.memory)
        start = cpu()
        for data in adds:
            index = int(parse(data).devpath.rsplit("memory", 1)[1])  # type: ignore[union-attr]
            fd = os.open(f"{memory}/memory{index}/state", os.O_WRONLY)
            os.write(fd, b"online")
            os.close(fd)
            fd = os.open(f"{memory}/memory{index}/valid_zones", os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
            parse(fake.uevent("online", index))
        return (cpu() - start) / blocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.001,
                        help="kernel mode: seconds between two blocks of the kernel's walk")
    args = parser.parse_args()
    configure("warning", "json")
    print(f"{args.blocks} blocks, {args.reps} repetitions, medians, CPU µs per block "
          f"(this process; the writer process not counted)")
    for mode in ("burst", "serial", "kernel"):
        base = statistics.median(baseline_run(args.blocks) for _ in range(args.reps))
        ours = statistics.median(daemon_run(args.blocks, mode, args.pace) for _ in range(args.reps))
        print(f"{mode:7s} bare loop {base * 1e6:7.1f}   hotplugd {ours * 1e6:7.1f}   ratio {ours / base:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
