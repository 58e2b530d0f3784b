"""The qga backend against real guests: ``hotplugd run --backend qga`` on this machine onlines
memory hot-added into two QEMU guests through their qemu-guest-agent.

Both guests boot with ``memhp_default_state=offline`` and run Debian's ``/usr/sbin/qemu-ga``
(installed on this machine, seen by the guests through the shared root). The daemon gets each
guest's agent socket and a QMP monitor of its own. Timings are printed (``pytest -s``) and kept
in ``qga-timings.json`` beside the daemon's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from harness import GiB, Guest, GuestConfig, HarnessError
from harness.assets import Assets

pytestmark = pytest.mark.vm

QEMU_GA = Path("/usr/sbin/qemu-ga")
QGA_GUEST = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                        virtio_mem=True, virtio_mem_max=8 * GiB, qga=True,
                        # two guests boot at once on a loaded machine: TCG's timer may look broken
                        kernel_args=("no_timer_check",))
BLOCKS_PER_GIB = 8


def _agent_answers(guest: Guest, timeout: float = 60) -> None:
    """Wait until the guest's qemu-ga answers on its socket (it starts in 1 to 2 s)."""
    from hotplugd_qga import AgentClient, AgentError

    async def ping() -> None:
        client = AgentClient(str(guest.qga_socket), timeout=2, name=str(guest.workdir))
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    await client.execute("guest-ping")
                    return
                except AgentError:
                    if time.monotonic() > deadline:
                        raise
                    await anyio.sleep(0.2)
        finally:
            await client.close()

    anyio.run(ping)


def _boot_with_agent(assets: Assets) -> Guest:
    guest = Guest(QGA_GUEST, assets).start()
    try:
        guest.start_qga()
        _agent_answers(guest)
    except BaseException:
        guest.close()
        raise
    return guest


@pytest.fixture(scope="module")
def qga_guests(vm_assets: Assets) -> Iterator[list[Guest]]:
    """Two guests running qemu-ga, booted at once."""
    if not QEMU_GA.exists():
        message = f"{QEMU_GA} missing: apt-get install qemu-guest-agent (scripts/provision-vm does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # QEMU dies with the *thread* that started it (PR_SET_PDEATHSIG): the pool outlives the guests.
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_boot_with_agent, vm_assets) for _ in range(2)]
        guests, errors = [], []
        for future in futures:
            try:
                guests.append(future.result())
            except HarnessError as exc:
                errors.append(exc)
        try:
            if errors:
                raise errors[0]
            yield guests
        finally:
            for g in guests:
                g.close()

class HostDaemon:
    """``hotplugd run --backend qga`` on this machine, in the background."""

    def __init__(self, guests: list[Guest], workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "hotplugd.log"
        self.ready = workdir / "ready"
        rows = "".join(
            f'[[plugins.qga.guest]]\nname = "vm{i}"\nqga = "{g.qga_socket}"\nqmp = "{g.daemon_qmp_socket}"\n'
            f'port_id = "qgaport"\n' for i, g in enumerate(guests))
        self.config = workdir / "hotplugd.toml"
        self.config.write_text(
            'backend = "qga"\nlog_format = "json"\n[metrics]\nenabled = false\n'
            '[scheduler]\nsettle = 0.02\n[plugins.qga]\n' + rows)
        self.config.chmod(0o644)
        exe = Path(sys.prefix) / "bin" / "hotplugd"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(exe), "run", "--config", str(self.config), "--ready-file", str(self.ready)],
                                         stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"hotplugd did not become ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def events(self) -> list[dict]:
        rows = []
        for line in self.log.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        return rows


def _hot_add_and_wait(guests: list[Guest], add: str, gib: int = 2) -> float:
    """Hot-add ``gib`` GiB into each guest at once; seconds until every new block is online."""
    before = [{b.index for b in g.agent.memory_blocks()} for g in guests]
    start = time.monotonic()
    for g in guests:
        if add == "dimm":
            g.qmp.hotplug_dimm(gib * GiB)
        else:
            g.qmp.resize_virtio_mem(g.qmp.virtio_mem_size() + gib * GiB)
    for g, known in zip(guests, before, strict=True):
        g.agent.wait_blocks(exclude=known, min_count=gib * BLOCKS_PER_GIB, state="online", timeout=60)
    return time.monotonic() - start


def test_hotplugd_on_the_host_onlines_two_guests(qga_guests: list[Guest], tmp_path: Path) -> None:
    a, b = qga_guests
    daemon = HostDaemon(qga_guests, tmp_path)
    try:
        daemon.wait_ready()
        timings = {
            "dimm 2 GiB, guest A alone": _hot_add_and_wait([a], "dimm"),
            "dimm 2 GiB, guest B alone": _hot_add_and_wait([b], "dimm"),
            "dimm 2 GiB each, A and B at once": _hot_add_and_wait([a, b], "dimm"),
            "virtio-mem +2 GiB, guest B": _hot_add_and_wait([b], "virtio-mem"),
        }
    finally:
        code = daemon.stop()
    (tmp_path / "qga-timings.json").write_text(json.dumps(timings, indent=2))
    print("\n" + "\n".join(f"{k}: {v:.2f} s" for k, v in timings.items()))
    for p in (e for e in daemon.events() if e.get("event") == "phase_finished"):
        print(f"phase {p['phase']}: {p['blocks']} blocks in {p['seconds']:.3f} s, workers {p['workers']}, "
              f"effective concurrency {p['effective_concurrency']}")
    assert code == 0, daemon.log.read_text()
    for g in qga_guests:  # nothing left offline in either guest
        assert [blk.index for blk in g.agent.memory_blocks() if not blk.online] == []
    events = daemon.events()
    failures = [e for e in events if e.get("level") == "error"]
    assert failures == [], failures
    onlined = sum(p["blocks"] for p in events if p.get("event") == "phase_finished")
    assert onlined == (2 + 2 + 2 * 2 + 2) * BLOCKS_PER_GIB  # each hot-added block onlined once
