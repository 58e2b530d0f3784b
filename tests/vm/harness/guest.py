"""Boot a QEMU (TCG) guest that runs this machine's ``/`` read-only, and drive it.

::

    with Guest(GuestConfig(memhp_default_state="offline")) as guest:
        before = {b.index for b in guest.agent.memory_blocks()}
        guest.qmp.hotplug_dimm(GiB)
        guest.agent.wait_blocks(exclude=before, min_count=8, state="offline")

QEMU is killed by its own pid when the ``with`` block ends, at interpreter exit (``atexit``) and,
through ``PR_SET_PDEATHSIG``, when the process that started it dies.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .agent import MARKER
from .assets import Assets, find_assets
from .client import AgentClient, GuestProcess
from .errors import GuestError, HarnessError
from .initramfs import GUEST_SHARE
from .qmp import QMP, GiB

PR_SET_PDEATHSIG = 1
#: The virtio-serial port name qemu-guest-agent looks for.
QGA_PORT = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class GuestConfig:
    """How to boot a guest. Sizes: QEMU syntax for ``memory``/``maxmem``, bytes for virtio-mem.

    ``root_cache`` is the 9p ``cache=`` mode of the shared root: ``loose`` makes Python start
    about 3 times faster in the guest (3 to 5 s against 9 to 11 s to import hotplugd's deps) but
    the guest may not see files changed on the host after it looked at them: put files meant for
    the guest in :attr:`Guest.share` (never cached). ``python`` runs the agent.
    ``qga`` adds a qemu-guest-agent port (``id=qgaport``, socket :attr:`Guest.qga_socket`) and a
    second QMP monitor (:attr:`Guest.daemon_qmp_socket`) for a daemon on this machine;
    :meth:`Guest.start_qga` starts the agent in the guest.
    """

    memhp_default_state: str = "offline"
    memory: str = "2G"
    slots: int = 8
    maxmem: str = "64G"
    cpus: int = 2
    virtio_mem: bool = True
    virtio_mem_max: int = 16 * GiB
    kernel_args: tuple[str, ...] = ()
    qemu_args: tuple[str, ...] = ()
    python: str = "/usr/bin/python3"
    root_cache: str = "loose"
    boot_timeout: float = 180.0
    qga: bool = False

    def __post_init__(self) -> None:
        if self.memhp_default_state not in ("offline", "online", "online_kernel", "online_movable"):
            raise ValueError(f"memhp_default_state={self.memhp_default_state!r}")
        if self.root_cache not in ("none", "loose", "fscache", "mmap"):
            raise ValueError(f"root_cache={self.root_cache!r}")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Guest:
    """One QEMU guest with its QMP session (:attr:`qmp`) and agent connection (:attr:`agent`)."""

    def __init__(self, config: GuestConfig | None = None, assets: Assets | None = None,
                 workdir: Path | None = None) -> None:
        self.config = config or GuestConfig()
        self.assets = assets or find_assets()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="hotplugd-vm-"))
        self.share = self.workdir / "share"
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMP | None = None
        self._agent: AgentClient | None = None
        self._own_workdir = workdir is None

    # -- the command line ----------------------------------------------------------------------

    def kernel_cmdline(self) -> str:
        c = self.config
        args = ["console=ttyS0", "panic=-1", f"memhp_default_state={c.memhp_default_state}", MARKER,
                f"hotplugd.vmtest.python={c.python}", f"hotplugd.vmtest.agent={self.assets.agent}",
                f"hotplugd.vmtest.rootcache={c.root_cache}",
                *c.kernel_args]
        return " ".join(args)

    def qemu_argv(self) -> list[str]:
        c, w = self.config, self.workdir
        argv = [
            str(self.assets.qemu), "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
            "-smp", str(c.cpus), "-m", f"{c.memory},slots={c.slots},maxmem={c.maxmem}",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.assets.kernel), "-initrd", str(self.assets.initramfs),
            "-append", self.kernel_cmdline(), "-serial", f"file:{w / 'serial.log'}",
            "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
            "-fsdev", f"local,id=share,path={self.share},security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
            "-chardev", f"socket,id=ctl,path={w / 'ctl.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=ctl,name=ctl",
            "-qmp", f"unix:{w / 'qmp.sock'},server=on,wait=off",
        ]
        if c.qga:
            argv += ["-chardev", f"socket,id=qga0,path={self.qga_socket},server=on,wait=off",
                     "-device", f"virtserialport,chardev=qga0,name={QGA_PORT},id=qgaport",
                     "-chardev", f"socket,id=qmp2,path={self.daemon_qmp_socket},server=on,wait=off",
                     "-mon", "chardev=qmp2,mode=control"]
        if c.virtio_mem:
            argv += ["-object", f"memory-backend-ram,id=vmem0,size={c.virtio_mem_max}",
                     "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0"]
        return argv + list(c.qemu_args)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Guest:
        """Launch QEMU and wait until the agent greets (about 8 s under TCG)."""
        if self._proc is not None:
            raise HarnessError("guest already started")
        self.share.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.workdir / "qemu.log", "wb") as log:
            self._proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        atexit.register(self.close)
        try:
            self._agent = AgentClient(self.workdir / "ctl.sock", self.alive)
            self._agent.connect()
            self._qmp = QMP.connect(self.workdir / "qmp.sock")
            self._agent.wait_hello(self.config.boot_timeout)
        except HarnessError as exc:
            report = self.diagnostics()
            self.close(keep_workdir=True)
            raise GuestError(f"guest did not boot: {exc}\n{report}") from exc
        self.boot_seconds = time.monotonic() - t0
        return self

    @property
    def pid(self) -> int | None:
        """QEMU's pid (None before :meth:`start`)."""
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, keep_workdir: bool = False) -> None:
        """Kill QEMU by its pid (SIGTERM, then SIGKILL after 5 s) and remove the work dir."""
        atexit.unregister(self.close)
        for conn in (self._agent, self._qmp):
            if conn is not None:
                conn.close()
        self._agent = self._qmp = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._own_workdir and not keep_workdir and not os.environ.get("HOTPLUGD_VM_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def diagnostics(self, lines: int = 40) -> str:
        """The tails of QEMU's own log and of the guest's serial console, for error messages."""
        parts = []
        for name in ("qemu.log", "serial.log"):
            path = self.workdir / name
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(missing)"]
            parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def serial_log(self) -> str:
        return (self.workdir / "serial.log").read_text(errors="replace")

    # -- access --------------------------------------------------------------------------------

    @property
    def qmp(self) -> QMP:
        if self._qmp is None:
            raise HarnessError("guest not running")
        return self._qmp

    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            raise HarnessError("guest not running")
        return self._agent

    @property
    def guest_share(self) -> str:
        """Where :attr:`share` (a host directory) is mounted, writable, in the guest."""
        return GUEST_SHARE

    # -- qemu-guest-agent (GuestConfig.qga) ---------------------------------------------------

    @property
    def qga_socket(self) -> Path:
        """This machine's end of the guest's ``org.qemu.guest_agent.0`` port."""
        return self.workdir / "qga.sock"

    @property
    def daemon_qmp_socket(self) -> Path:
        """A second QMP monitor, for a daemon on this machine (the harness keeps :attr:`qmp`)."""
        return self.workdir / "qmp2.sock"

    def start_qga(self) -> GuestProcess:
        """Start Debian's ``/usr/sbin/qemu-ga`` in the guest (seen through the shared root) on its port."""
        if not self.config.qga:
            raise HarnessError("start_qga needs GuestConfig(qga=True)")
        script = (f"for p in /sys/class/virtio-ports/*; do "
                  f"[ \"$(cat $p/name)\" = {QGA_PORT} ] && dev=/dev/${{p##*/}}; done; "
                  f"[ -n \"$dev\" ] || {{ echo no {QGA_PORT} port >&2; exit 2; }}; "
                  f"mkdir -p /dev/virtio-ports && ln -sf $dev /dev/virtio-ports/{QGA_PORT} && "
                  f"exec /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/{QGA_PORT} "
                  "-t /run -f /run/qemu-ga.pid")
        return self.agent.spawn(["/bin/sh", "-c", script])

    # -- the daemon under test -----------------------------------------------------------------

    def hotplugd_path(self) -> Path:
        """``<repo>/.venv/bin/hotplugd``, the same path in the guest as on the host."""
        path = self.assets.project / ".venv" / "bin" / "hotplugd"
        if not path.exists():
            raise HarnessError(f"{path} does not exist: run scripts/setup first")
        return path

    def start_hotplugd(self, *args: str, env: dict[str, str] | None = None,
                       subcommand: Sequence[str] = ("run", "--backend", "sysfs")) -> GuestProcess:
        """Start ``hotplugd run --backend sysfs ARGS...`` in the background in the guest.

        Stop it with ``proc.stop(signal.SIGTERM)`` (SIGKILL after a timeout), or
        ``proc.signal(...)`` then ``proc.wait(...)``; both give its output.
        """
        return self.agent.spawn([str(self.hotplugd_path()), *subcommand, *args], env=env,
                                cwd=str(self.assets.project))

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<Guest pid={self.pid} {state} memhp={self.config.memhp_default_state} {self.workdir}>"
