"""Who onlines hot-added memory in a guest: the kernel itself, hotplugd, or systemd-udevd with a rule.

Each onliner says how the guest must boot (``memhp_default_state``), and is started in a booted
guest before the hot-add and stopped after. systemd-udevd is Debian's own binary, unpacked into
``.vm/udev`` with ``dpkg -x`` (:func:`provision_udev`): it is never installed on this machine,
and it only ever runs inside a guest, whose ``/run/udev`` gets the rules.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from daemonctl import GuestDaemon
from harness import Guest, GuestError, GuestProcess, HarnessError
from harness.assets import project_root
from onlinetime import PROBE

#: The classic distro rule (RHEL's 40-redhat.rules, SUSE's 80-hotplug-cpu-mem.rules, many guides).
UDEV_RULE = ('SUBSYSTEM=="memory", ACTION=="add", PROGRAM="/bin/uname -p", RESULT!="s390*", '
             'ATTR{state}=="offline", ATTR{state}="online"\n')


class Onliner(Protocol):
    name: str
    memhp_default_state: str

    def start(self, guest: Guest) -> None: ...

    def stop(self, guest: Guest) -> dict[str, Any]: ...


@dataclass
class KernelOnliner:
    """The kernel onlines each block as it adds it (``memhp_default_state=online``)."""

    name: str = "kernel auto-online"
    memhp_default_state: str = "online"

    def start(self, guest: Guest) -> None:
        pass

    def stop(self, guest: Guest) -> dict[str, Any]:
        return {}


@dataclass
class HotplugdOnliner:
    """``hotplugd run --backend sysfs ARGS`` in the guest, metrics settings left at their defaults."""

    name: str
    args: tuple[str, ...] = ()
    memhp_default_state: str = "offline"
    daemon: GuestDaemon | None = field(default=None, repr=False)

    def start(self, guest: Guest) -> None:
        self.daemon = GuestDaemon.start(guest, *self.args, textfile=False)

    def cpu_seconds(self, guest: Guest) -> float:
        """The daemon's CPU seconds so far (user + system, every thread, and its child processes: the
        writer), from ``/proc/PID/stat`` in the guest (clock ticks of 1/100 s)."""
        if self.daemon is None:
            raise HarnessError("hotplugd was not started")
        pid = self.daemon.proc.pid
        out = guest.agent.run(["/bin/sh", "-c", f"cat /proc/{pid}/stat; for c in $(pgrep -P {pid}); do "
                                                f"cat /proc/$c/stat 2>/dev/null; done"]).stdout
        return sum(stat_cpu(line) for line in out.splitlines() if line.strip())

    def settled_cpu(self, guest: Guest, quiet: float = 1.0, limit: float = 30.0) -> float:
        """:meth:`cpu_seconds` once the daemon has stopped using CPU (less than a tick's worth over
        ``quiet`` seconds; at most ``limit`` seconds): its read-back of a hot-add may end after the probe's."""
        deadline = time.monotonic() + limit
        last = self.cpu_seconds(guest)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu_seconds(guest)
            if now - last < 0.015:
                return now
            last = now
        return last

    def stop(self, guest: Guest) -> dict[str, Any]:
        """Stop it; ``status`` is its last word, e.g. ``pending 0 blocks, onlined 288, failed 0``."""
        if self.daemon is None:
            raise HarnessError("hotplugd was not started")
        self.daemon.stop()
        status = self.daemon.final_status()
        self.daemon = None
        return {"status": status}


def stat_cpu(line: str) -> float:
    """utime + stime of one ``/proc/PID/stat`` line, in seconds (the fields after the command's ``)``)."""
    fields = line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


class _LoopOnliner:
    """An onliner that is one process in the guest: started, ready once it wrote its ready file, stopped."""

    proc: GuestProcess | None

    def argv(self, guest: Guest, ready: str) -> list[str]:
        raise NotImplementedError

    def start(self, guest: Guest) -> None:
        ready = f"/run/onliner-{id(self)}.ready"
        self.proc = guest.agent.spawn(self.argv(guest, ready))
        guest.agent.wait_path(ready, 60)

    def stop(self, guest: Guest) -> dict[str, Any]:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        return {}


@dataclass
class NaiveOnliner(_LoopOnliner):
    """A reference, not a product: ``guest_probe.py naive-onliner`` (one thread, write on each add event)."""

    name: str = "naive Python loop"
    memhp_default_state: str = "offline"
    proc: GuestProcess | None = field(default=None, repr=False)

    def argv(self, guest: Guest, ready: str) -> list[str]:
        return [guest.config.python, str(PROBE), "naive-onliner", "--ready", ready]


@dataclass
class COnliner(_LoopOnliner):
    """The floor for any user-space onliner: ``bench/c_onliner.c``, a C loop writing ``online`` on each add.

    Built with this machine's C compiler into ``.vm/c_onliner`` (:func:`build_c_onliner`);
    the guest runs it from this machine's root.
    """

    name: str = "C loop (floor)"
    memhp_default_state: str = "offline"
    binary: Path = field(default_factory=lambda: project_root() / ".vm" / "c_onliner")
    proc: GuestProcess | None = field(default=None, repr=False)

    def argv(self, guest: Guest, ready: str) -> list[str]:
        if not self.binary.is_file():
            raise HarnessError(f"{self.binary} missing: call onliners.build_c_onliner() first")
        return [str(self.binary), ready]


def build_c_onliner(project: Path | None = None) -> Path:
    """Compile ``bench/c_onliner.c`` into ``.vm/c_onliner`` (cc from ``$CC``, default ``cc``), once."""
    root = project or project_root()
    source, binary = root / "bench" / "c_onliner.c", root / ".vm" / "c_onliner"
    if binary.is_file() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CC", "cc")
    try:
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise HarnessError(f"no C compiler ({compiler}) to build {source}: apt-get install gcc, "
                           "or leave out 'c'") from None
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"{compiler} failed on {source}:\n{exc.stderr}") from None
    return binary


def udev_root(project: Path | None = None) -> Path:
    return (project or project_root()) / ".vm" / "udev"


def provision_udev(project: Path | None = None) -> Path:
    """Unpack Debian's ``udev`` package into ``.vm/udev`` (download only; nothing is installed or run)."""
    root = udev_root(project)
    if (root / "bin" / "udevadm").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "udev"], cwd=tmp, check=True, capture_output=True)
        debs = list(Path(tmp).glob("udev_*.deb"))
        if len(debs) != 1:
            raise HarnessError(f"apt-get download udev gave {debs}")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True)
    return root


@dataclass
class UdevOnliner:
    """Debian's systemd-udevd in the guest: the package's rules plus :data:`UDEV_RULE`."""

    name: str = "udev rule"
    memhp_default_state: str = "offline"
    root: Path = field(default_factory=udev_root)
    proc: GuestProcess | None = field(default=None, repr=False)

    @property
    def udevadm(self) -> str:
        return str(self.root / "bin" / "udevadm")

    def start(self, guest: Guest) -> None:
        if not Path(self.udevadm).is_file():
            raise HarnessError(f"{self.udevadm} missing: call onliners.provision_udev() first")
        rules = "/run/udev/rules.d"
        guest.agent.run(["/bin/sh", "-c", f"mkdir -p {rules} && cp {self.root}/lib/udev/rules.d/*.rules {rules}/"])
        guest.agent.write_file(f"{rules}/40-hotplug-memory.rules", UDEV_RULE)
        # udevadm is multi-call: run as "systemd-udevd" it is the daemon.
        self.proc = guest.agent.spawn(["/bin/bash", "-c", f"exec -a systemd-udevd {self.udevadm}"])
        guest.agent.wait_path("/run/udev/control", 60)
        guest.agent.run([self.udevadm, "control", "--ping", "--timeout=60"], timeout=90)

    def stop(self, guest: Guest) -> dict[str, Any]:
        if self.proc is None:
            raise HarnessError("udevd was not started")
        result = self.proc.stop()
        self.proc = None
        if result.returncode not in (0, -15):
            raise GuestError(f"systemd-udevd exited {result.returncode}: {result.stderr[-2000:]}")
        return {}

