"""Guests running qemu-guest-agent, and ``hotplugd run --backend qga`` on this machine driving them.

Shared by ``tests/vm/test_qga.py`` and ``bench/qga_guests.py``::

    with ThreadPoolExecutor(2) as pool:             # QEMU dies with the thread that started it
        guests = boot_guests(pool, [QGA_GUEST, QGA_GUEST], assets)
        daemon = HostDaemon(guests, workdir)
        daemon.wait_ready()
        ...
        daemon.stop()

The agent is Debian's ``/usr/sbin/qemu-ga`` (installed on this machine by ``scripts/provision-vm``,
seen by the guests through the shared root).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import anyio
from harness import GiB, Guest, GuestConfig, GuestProcess, HarnessError
from harness.assets import Assets

QEMU_GA = Path("/usr/sbin/qemu-ga")
QEMU_GA_MISSING = f"{QEMU_GA} missing: apt-get install qemu-guest-agent (scripts/provision-vm does)"
#: A guest for the qga backend: hot-added blocks stay offline, qemu-ga's port and a QMP monitor for the daemon.
QGA_GUEST = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                        virtio_mem=True, virtio_mem_max=8 * GiB, qga=True,
                        # several guests boot at once on a loaded machine: TCG's timer may look broken
                        kernel_args=("no_timer_check",))


def agent_answers(guest: Guest, timeout: float = 60) -> None:
    """Wait until the guest's qemu-ga answers ``guest-ping`` on its socket (it starts in 1 to 2 s)."""
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


def start_agent(guest: Guest) -> GuestProcess:
    """Start qemu-ga in ``guest`` and wait until it answers; the handle kills it (``signal(SIGKILL)``)."""
    proc = guest.start_qga()
    agent_answers(guest)
    return proc


def _boot(config: GuestConfig, assets: Assets, with_agent: bool) -> tuple[Guest, GuestProcess | None]:
    guest = Guest(config, assets).start()
    try:
        return guest, (start_agent(guest) if with_agent else None)
    except BaseException:
        guest.close()
        raise


def boot_guests(pool: Executor, configs: Sequence[GuestConfig], assets: Assets,
                with_agent: bool = True) -> list[tuple[Guest, GuestProcess | None]]:
    """Boot one guest per config at once in ``pool`` (whose threads must outlive the guests:
    QEMU dies with the thread that started it); with qemu-ga started when ``with_agent``.
    If any fails, the others are closed and its error raised."""
    futures = [pool.submit(_boot, c, assets, with_agent) for c in configs]
    booted, errors = [], []
    for future in futures:
        try:
            booted.append(future.result())
        except HarnessError as exc:
            errors.append(exc)
    if errors:
        for guest, _ in booted:
            guest.close()
        raise errors[0]
    return booted


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool | int | float) else str(value)


class HostDaemon:
    """``hotplugd run --backend qga`` on this machine, in the background, one ``[[plugins.qga.guest]]`` a guest.

    ``settings`` go into ``[plugins.qga]`` (e.g. ``{"timeout": "30s"}``); everything else is hotplugd's
    default but the metrics server (off: other daemons may run on this machine) and the log (JSON lines).
    """

    def __init__(self, guests: Sequence[Guest], workdir: Path, settings: Mapping[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.log = workdir / "hotplugd.log"
        self.ready = workdir / "ready"
        self.config = workdir / "hotplugd.toml"
        self.config.write_text(self.config_text(guests, settings or {}))
        self.config.chmod(0o644)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(self.exe()), "run", "--config", str(self.config),
                                          "--ready-file", str(self.ready)], stdout=out, stderr=subprocess.STDOUT)

    @staticmethod
    def exe() -> Path:
        return Path(sys.prefix) / "bin" / "hotplugd"

    @staticmethod
    def config_text(guests: Sequence[Guest], settings: Mapping[str, Any]) -> str:
        rows = "".join(
            f'[[plugins.qga.guest]]\nname = "vm{i}"\nqga = "{g.qga_socket}"\nqmp = "{g.daemon_qmp_socket}"\n'
            f'port_id = "qgaport"\n' for i, g in enumerate(guests))
        keys = "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
        return 'backend = "qga"\nlog_format = "json"\n[metrics]\nenabled = false\n[plugins.qga]\n' + keys + rows

    @classmethod
    def accepts(cls, settings: Mapping[str, Any], workdir: Path) -> str | None:
        """None if ``hotplugd check-config`` accepts ``settings`` in ``[plugins.qga]``, else its message."""
        path = workdir / "check.toml"
        path.write_text('backend = "qga"\n[plugins.qga]\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
                        + '[[plugins.qga.guest]]\nname = "vm0"\nqga = "/run/vm0/qga.sock"\n')
        done = subprocess.run([str(cls.exe()), "check-config", "--config", str(path)], capture_output=True, text=True)
        return None if done.returncode == 0 else (done.stdout + done.stderr).strip()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"hotplugd did not become ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 15 s); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of its log so far."""
        rows = []
        for line in self.log.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        return rows

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("level") == "error"]
