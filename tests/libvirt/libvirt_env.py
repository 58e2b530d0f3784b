"""A private libvirtd, TCG domains booting the guest harness, and ``hotplugd run --backend libvirt`` beside them.

Shared by ``tests/libvirt/test_libvirtd.py`` and ``bench/libvirt_guests.py``.

:class:`PrivateLibvirtd` runs Debian's ``libvirtd`` (``scripts/provision-libvirt``)
in a mount namespace of its own, with a private config, socket and state: its
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt``
and ``/var/log/libvirt`` are directories of a temporary directory bound over
the (empty) system ones, so two runs never collide and nothing is left on the
machine. Its qemu.conf runs QEMU as root without a security driver or
cgroups and logs QEMU's output to files (no virtlogd). It is reached at
``qemu+unix:///system?socket=<dir>/run/libvirt-sock``. The state survives a
:meth:`~PrivateLibvirtd.restart`, so the new libvirtd takes its running domains back.

:class:`LibvirtGuest` is one transient domain (``tests/libvirt/domains.py``)
booting the harness's kernel and initramfs; the harness's control port gives
the test a way into the guest that is not the guest agent (so nothing but
hotplugd ever sends the agent a command: a domain never selected stays free of
the ``custom-ga-command`` taint).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from domains import DomainSpec, dimm_xml, domain_xml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "vm") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "vm"))

from harness import GiB, Guest, GuestConfig, HarnessError, NotProvisioned  # noqa: E402
from harness.assets import Assets  # noqa: E402
from harness.client import AgentClient  # noqa: E402
from harness.guest import QGA_PORT  # noqa: E402

LIBVIRTD = Path("/usr/sbin/libvirtd")
VIRSH = Path("/usr/bin/virsh")
HINT = "run scripts/provision-libvirt to enable"
#: Bound over the system's directories inside libvirtd's mount namespace.
PRIVATE_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
                "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}
QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"""
PR_SET_PDEATHSIG = 1


def require_libvirt() -> None:
    """Raise NotProvisioned unless libvirtd, virsh and the Python binding are here."""
    if not LIBVIRTD.exists() or not VIRSH.exists():
        raise NotProvisioned(f"{LIBVIRTD} or {VIRSH} missing: {HINT}")
    try:
        import libvirt
    except ImportError:
        raise NotProvisioned(f"libvirt-python is not installed in this Python: {HINT}") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; not printed as well
    missing = [d for d in PRIVATE_DIRS.values() if d != "/run/libvirt" and not os.path.isdir(d)]
    if missing:
        raise NotProvisioned(f"{', '.join(missing)} missing: {HINT}")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class PrivateLibvirtd:
    """libvirtd with a private config, socket and state (see the module's doc)."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="hpd-lv-", dir="/tmp"))
        self._own = workdir is None
        for name in PRIVATE_DIRS:
            (self.dir / name).mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "run" / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        (self.dir / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.dir / "run"}"\nunix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\n'
            f'auth_unix_ro = "none"\nlog_outputs = "3:file:{self.dir / "libvirtd.log"}"\n')
        (self.dir / "etc" / "qemu.conf").write_text(QEMU_CONF)
        self.proc: subprocess.Popen[bytes] | None = None

    def script(self) -> str:
        binds = "".join(f"mount --bind {self.dir / name} {target}\n" for name, target in PRIVATE_DIRS.items())
        return f"set -e\nmkdir -p /run/libvirt\n{binds}exec {LIBVIRTD} -p {self.dir / 'libvirtd.pid'}\n"

    def start(self, timeout: float = 30) -> PrivateLibvirtd:
        os.makedirs("/run/libvirt", exist_ok=True)  # the mount point (empty; tmpfs, gone at reboot)
        with open(self.dir / "libvirtd.out", "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.script()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"libvirtd did not start: {self.diagnostics()}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        import libvirt

        if not self.socket.exists():
            return False
        try:
            libvirt.open(self.uri).close()
            return True
        except libvirt.libvirtError:
            return False

    def stop(self) -> None:
        """SIGTERM libvirtd (its domains keep running), and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self) -> Any:
        import libvirt

        return libvirt.open(self.uri)

    def virsh(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([str(VIRSH), "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise HarnessError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def diagnostics(self) -> str:
        parts = []
        for name in ("libvirtd.out", "libvirtd.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {name} ---\n" + "\n".join(
                    (self.dir / name).read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    def domain_log(self, name: str) -> str:
        """QEMU's log of domain ``name``, as libvirt writes it (taints included)."""
        path = self.dir / "log" / "qemu" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Destroy every domain, stop libvirtd, remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                conn = self.connect()
                for dom in conn.listAllDomains():
                    with contextlib.suppress(Exception):
                        dom.destroy()
                conn.close()
        self.stop()
        self._kill_leftover_qemu()
        if self._own and not os.environ.get("HOTPLUGD_VM_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftover_qemu(self) -> None:
        """QEMU processes of this libvirtd's domains still running (it was stopped before destroying them):
        found by this directory in their command line, killed by pid."""
        marker = str(self.dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if cmdline.startswith(b"/usr/bin/qemu-system") and marker in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class LibvirtGuest:
    """A transient TCG domain booting the harness's kernel (memhp_default_state as given), qemu-ga started."""

    def __init__(self, libvirtd: PrivateLibvirtd, name: str, assets: Assets, *, memhp: str = "offline",
                 virtio_mem: int = 0, metadata: str = "", memory: int = 2 * GiB, cpus: int = 2) -> None:
        self.libvirtd = libvirtd
        self.name = name
        self.workdir = libvirtd.dir / "guests" / name
        (self.workdir / "share").mkdir(parents=True, exist_ok=True)
        self.config = GuestConfig(memhp_default_state=memhp, python="/usr/bin/python3",
                                  kernel_args=("no_timer_check",))
        cmdline = Guest(self.config, assets, workdir=self.workdir).kernel_cmdline()
        self.spec = DomainSpec(name, self.workdir, assets.kernel, assets.initramfs, cmdline, memory=memory,
                               cpus=cpus, virtio_mem=virtio_mem, metadata=metadata)
        self.agent: AgentClient = AgentClient(self.spec.ctl_socket, self.alive)
        self.dom: Any = None
        self.qga: Any = None
        self.dimms = 0

    def alive(self) -> bool:
        if self.dom is None:
            return False
        for _ in range(2):
            try:
                return bool(self.dom.isActive())
            except Exception:  # its connection died with a libvirtd restart: look it up again
                try:
                    self.dom = self.libvirtd.connect().lookupByName(self.name)
                except Exception:
                    return False
        return False

    def start(self, boot_timeout: float = 180) -> LibvirtGuest:
        conn = self.libvirtd.connect()
        self.dom = conn.createXML(domain_xml(self.spec), 0)
        self.agent.connect(30)
        self.agent.wait_hello(boot_timeout)
        return self

    def start_qga(self) -> Any:
        """Start Debian's qemu-ga in the guest on its port; wait until libvirt sees it connected."""
        script = (f"for p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name)\" = {QGA_PORT} ] && "
                  f"dev=/dev/${{p##*/}}; done; mkdir -p /dev/virtio-ports && ln -sf $dev /dev/virtio-ports/{QGA_PORT} "
                  f"&& exec /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/{QGA_PORT} -t /run "
                  f"-f /run/qemu-ga.pid")
        self.qga = self.agent.spawn(["/bin/sh", "-c", script])
        self.wait_agent_state("connected")
        return self.qga

    def wait_agent_state(self, state: str, timeout: float = 60) -> None:
        """Until the domain's XML shows the agent channel ``connected`` (no agent command: no taint)."""
        deadline = time.monotonic() + timeout
        while f"name='{QGA_PORT}' state='{state}'" not in self.dom.XMLDesc(0):
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: the agent channel is not {state} after {timeout} s")
            time.sleep(0.2)

    def signal_qga(self, sig: int) -> None:
        """Signal the guest's qemu-ga (SIGSTOP: an agent that never answers; SIGCONT: back)."""
        self.qga.signal(sig)

    def attach_dimm(self, size: int) -> None:
        import libvirt

        self.dom.attachDeviceFlags(dimm_xml(size), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self.dimms += 1

    def blocks(self) -> dict[int, bool]:
        """The guest's memory blocks (phys_index → online), read from its sysfs through the control port."""
        return {b.index: b.online for b in self.agent.memory_blocks()}

    def wait_blocks(self, predicate: Any, what: str, timeout: float = 120) -> dict[int, bool]:
        deadline = time.monotonic() + timeout
        while True:
            blocks = self.blocks()
            if predicate(blocks):
                return blocks
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} not within {timeout} s: offline "
                                     f"{sorted(i for i, on in blocks.items() if not on)}")
            time.sleep(0.1)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.dom.destroy()

    def close(self) -> None:
        self.agent.close()
        self.destroy()


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool | int | float | list) else str(value)


class HostHotplugd:
    """``hotplugd run --backend libvirt`` on this machine: JSON logs, metrics on loopback at ``port`` (0: off)."""

    def __init__(self, uri: str, workdir: Path, settings: Mapping[str, Any], port: int = 0,
                 log_level: str = "info") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.log = workdir / "hotplugd.log"
        self.ready = workdir / "ready"
        self.ready.unlink(missing_ok=True)
        self.port = port
        keys = "".join(f"{k} = {_toml(v)}\n" for k, v in {"uri": uri, **settings}.items())
        metrics = f'enabled = true\naddress = "127.0.0.1"\nport = {port}\n' if port else "enabled = false\n"
        self.config = workdir / "hotplugd.toml"
        self.config.write_text(
            f'backend = "libvirt"\nlog_format = "json"\n[metrics]\n{metrics}[plugins.libvirt]\n{keys}')
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(Path(sys.prefix) / "bin" / "hotplugd"), "run", "--config",
                                          str(self.config), "--ready-file", str(self.ready), "--log-level", log_level],
                                         stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def wait_ready(self, timeout: float = 60) -> HostHotplugd:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"hotplugd did not become ready:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        rows = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if name is None or row.get("event") == name:
                    rows.append(row)
        return rows

    def onlined(self) -> dict[str, float]:
        """``hotplugd_blocks_onlined_total`` summed by domain, scraped from its metrics endpoint."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "hotplugd_blocks_onlined_total":
                    counts[s.labels["domain"]] = counts.get(s.labels["domain"], 0) + s.value
        return counts


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def boot_all(guests: Sequence[LibvirtGuest], agent: bool = True) -> None:
    """Start every domain at once, then wait for each (and its qemu-ga)."""
    for g in guests:
        conn = g.libvirtd.connect()
        g.dom = conn.createXML(domain_xml(g.spec), 0)
    for g in guests:
        g.agent.connect(30)
        g.agent.wait_hello(240)
        if agent:
            g.start_qga()
