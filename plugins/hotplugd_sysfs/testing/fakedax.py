"""A dax bus for :class:`~hotplugd_sysfs.testing.fakesysfs.FakeSysfs`: devices, the device_dax and kmem drivers, tiers.

::

    fake = FakeSysfs(tmp_path, nodes={0: "0-3"})
    dax = FakeDax(fake)
    events = dax.add_device("dax0.0", node=1)      # its add and bind uevents: a new devdax device
    dax.refuse_kmem("dax0.0", errno.EBUSY)          # kmem's next probe of it fails
    dax.map_device("dax0.0", pid=4242)              # a process has /dev/dax0.0 mapped
    dax.deny_process(4243)                          # its maps and fd are unreadable (another user's)

Built from 6.1's ``drivers/dax/bus.c`` and ``kmem.c``, simplified: each device lives
under an nd region (``.../ndbus0/region0/daxX.Y/daxX.Y``, its parent the nd_dax whose
``namespace`` names the namespace, whose ``uuid`` is the namespace UUID), linked from
``bus/dax/devices``. Writes to the drivers' ``new_id``, ``remove_id``, ``bind`` and
``unbind`` do what the kernel does: ``device_dax`` matches every device, ``kmem`` only
the names written to its ``new_id``; a ``new_id`` probes an unbound device at once
(errors swallowed, as ``driver_attach``); a ``bind`` returns the probe's error. kmem's
probe adds the device's memory blocks (kmem aligns its range inwards to the block
size) on its ``target_node`` through :meth:`FakeSysfs.hot_add`, so the kernel's
auto-online knobs apply to them, and broadcasts their uevents, then the ``bind``.
Every uevent is kept in :attr:`FakeDax.events` and handed to each of :attr:`FakeDax.listeners`;
``<sys>/kernel/uevent_seqnum`` follows. ``state=True`` models the 2026 kmem driver's ``state``
(whole-device hotplug, :meth:`FakeDax._state`): present while kmem holds a device, the probe's
online type at first (``auto_online_blocks``). Processes in the fake ``/proc``:
:meth:`~FakeDax.add_process`, :meth:`~FakeDax.map_device`, :meth:`~FakeDax.open_device`,
:meth:`~FakeDax.deny_process` (unreadable, as another user's without capabilities),
:meth:`~FakeDax.mount_proc` (``hidepid=``, this process's capabilities).
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from pathlib import Path

from hotplugd_sysfs.testing.fakeio import encode, oserror
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

__all__ = ["DAX_SIZE", "DAX_START", "FakeDax"]

DEVDAX, KMEM = "device_dax", "kmem"
#: The measured guest's device (``docs/facts/DAX.md``): 2,111,832,064 bytes, 15 blocks of 128 MiB once kmem aligns it.
DAX_SIZE = 2014 << 20
DAX_START = (34 << 30) + (36 << 20)
_DRIVER_FILES = ("new_id", "remove_id", "bind", "unbind")


class FakeDax:
    """The dax bus of one fake tree (``<sys>/bus/dax``) and the memory tiering files."""

    def __init__(self, fake: FakeSysfs, *, kmem: bool = True, memmap_on_memory: bool = False,
                 state: bool = False) -> None:
        self.fake = fake
        self.bus = fake.sys / "bus/dax"
        self.devices = self.bus / "devices"
        self.drivers = self.bus / "drivers"
        self.region = fake.sys / "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0"
        #: The kernel has the per-device ``memmap_on_memory`` (6.8+) / the 2026 ``state`` attribute.
        self.has_memmap = memmap_on_memory
        self.has_state = state
        self.events: list[bytes] = []
        self.listeners: list[Callable[[bytes], None]] = []
        self.refusals: dict[str, deque[int]] = defaultdict(deque)
        self.ids: dict[str, set[str]] = {DEVDAX: set(), KMEM: set()}
        self.ops: list[tuple[str, str, str]] = []  # (driver, file, device) of each write to a driver
        self.state_writes: list[tuple[str, str]] = []  # (device, value) of each write to a daxX.Y/state
        self.state_refusals: dict[str, deque[int]] = defaultdict(deque)
        self.devices.mkdir(parents=True, exist_ok=True)
        self.region.mkdir(parents=True, exist_ok=True)
        for driver in (DEVDAX, KMEM) if kmem else (DEVDAX,):
            self._add_driver(driver)
        fake.store_hooks.append(self._store)

    def __repr__(self) -> str:
        return f"<FakeDax {[(n, self.driver(n)) for n in self.names()]}>"

    # -- building -------------------------------------------------------------------

    def _add_driver(self, driver: str) -> None:
        directory = self.drivers / driver
        directory.mkdir(parents=True, exist_ok=True)
        for name in _DRIVER_FILES:
            (directory / name).write_text("")

    def load_kmem(self) -> None:
        """``modprobe kmem``: its driver directory appears."""
        self._add_driver(KMEM)

    def add_device(self, name: str = "dax0.0", *, node: int = 1, start: int = DAX_START, size: int = DAX_SIZE,
                   uuid: str | None = None, raw_uuid: str | None = None, driver: str = DEVDAX,
                   align: int = 2 << 20) -> list[bytes]:
        """A new dax device (an ndctl ``create-namespace -m devdax``): its ``add`` uevent, then its probe's.

        ``uuid``: the nd_dax's (what ``ndctl list`` shows); ``raw_uuid``: the namespace label's.
        """
        real = self.region / name / name
        real.mkdir(parents=True)
        files = {"target_node": str(node), "size": str(size), "resource": hex(start), "align": str(align),
                 "modalias": "dax:t0*", "uevent": ""}
        if self.has_memmap:
            files["memmap_on_memory"] = "0"
        for attr, text in files.items():
            (real / attr).write_text(text + "\n")
        (real / "mapping0").mkdir()
        for attr, value in (("start", start), ("end", start + size - 1), ("page_offset", 0)):
            (real / "mapping0" / attr).write_text(hex(value) + "\n")
        if uuid is not None or raw_uuid is not None:
            namespace = f"namespace{name[3:]}"
            (real.parent / "namespace").write_text(namespace + "\n")
            (self.region / namespace).mkdir()
            if uuid is not None:
                (real.parent / "uuid").write_text(uuid + "\n")
            if raw_uuid is not None:
                (self.region / namespace / "uuid").write_text(raw_uuid + "\n")
        (self.devices / name).symlink_to(os.path.relpath(real, self.devices))
        first = len(self.events)
        self._emit("add", name)
        if driver:
            if driver == KMEM:
                self.ids[KMEM].add(name)  # as a daxctl reconfigure-device before it (a new_id)
            self._probe(name, driver)
        return self.events[first:]

    def refuse_state(self, name: str, *codes: int) -> None:
        """The next writes to ``name``'s ``state`` fail with these errnos (EBUSY: a block would not offline)."""
        self.state_refusals[name].extend(codes)

    def state(self, name: str) -> str | None:
        """``daxX.Y/state`` as read; None where it is absent (not bound to kmem, or a kernel before 2026)."""
        path = self.device_dir(name) / "state"
        return path.read_text().strip() if path.exists() else None

    def refuse_kmem(self, name: str, *codes: int) -> None:
        """kmem's next probes of ``name`` fail with these errnos (EBUSY: its range is taken), one each."""
        self.refusals[name].extend(codes)

    def add_process(self, pid: int, *, uid: int = 0, comm: str = "app") -> Path:
        """A process in the fake ``/proc``: ``maps`` (empty), ``fd/``, ``status`` (its uid), ``comm``."""
        directory = self.fake.proc / str(pid)
        (directory / "fd").mkdir(parents=True, exist_ok=True)
        if not (directory / "maps").exists():
            (directory / "maps").write_text("")
        (directory / "status").write_text(f"Name:\t{comm}\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        (directory / "comm").write_text(comm + "\n")
        return directory

    def map_device(self, name: str, pid: int = 4242, *, uid: int = 0) -> None:
        """A process with ``/dev/<name>`` mapped (a line of ``/proc/PID/maps``)."""
        directory = self.add_process(pid, uid=uid)
        (directory / "maps").write_text(f"7f0000000000-7f0040000000 rw-s 00000000 00:06 123 /dev/{name}\n")

    def open_device(self, name: str, pid: int = 4242, fd: int = 3) -> None:
        """A process holding ``/dev/<name>`` open, not mapped (a ``/proc/PID/fd/N`` link)."""
        directory = self.add_process(pid)
        (directory / "fd" / str(fd)).symlink_to(f"/dev/{name}")

    def deny_process(self, pid: int, *, files: tuple[str, ...] = ("maps", "fd"), code: int = errno.EACCES) -> None:
        """Reading these of ``/proc/PID`` fails with ``code``, as for root without CAP_SYS_PTRACE (``maps``)
        and CAP_DAC_READ_SEARCH (``fd``, mode 0500) when the process is another user's."""
        directory = self.fake.proc / str(pid)
        denied = {directory / f for f in files}

        def deny(path: Path) -> None:
            if path in denied or path.parent in denied:
                raise oserror(code, path)

        self.fake.before_read.append(deny)
        self.fake.before_listdir.append(deny)

    def mount_proc(self, hidepid: str = "invisible", caps: int | None = 0) -> None:
        """``/proc`` mounted as systemd's ``ProtectProc=`` does (``<proc>/self/mountinfo``), and this process's
        effective capabilities (``<proc>/self/status`` CapEff; None: no status file)."""
        own = self.fake.proc / "self"
        own.mkdir(parents=True, exist_ok=True)
        (own / "mountinfo").write_text(
            "25 1 0:23 / / rw,relatime - ext4 /dev/vda rw\n"
            f"30 25 0:5 / {self.fake.proc} rw,nosuid,nodev,noexec,relatime - proc proc rw,hidepid={hidepid}\n")
        if caps is not None:
            (own / "status").write_text(f"Name:\thotplugd\nCapEff:\t{caps:016x}\n")

    def set_tiers(self, tiers: dict[int, str]) -> None:
        """``memory_tierN/nodelist`` for each tier id N (``{4: "0", 22: "1"}``)."""
        base = self.fake.sys / "devices/virtual/memory_tiering"
        for tier, nodelist in tiers.items():
            (base / f"memory_tier{tier}").mkdir(parents=True, exist_ok=True)
            (base / f"memory_tier{tier}" / "nodelist").write_text(nodelist + "\n")

    def set_demotion(self, enabled: bool) -> None:
        path = self.fake.sys / "kernel/mm/numa/demotion_enabled"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("true\n" if enabled else "false\n")

    # -- reading back -------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(os.listdir(self.devices))

    def device_dir(self, name: str) -> Path:
        return Path(os.path.realpath(self.devices / name))

    def driver(self, name: str) -> str:
        """The driver ``name`` is bound to; "" when unbound."""
        try:
            return os.path.basename(os.readlink(self.device_dir(name) / "driver"))
        except FileNotFoundError:
            return ""

    def blocks(self, name: str) -> list[int]:
        """The memory blocks kmem makes of ``name`` (its range aligned inwards to the block size)."""
        real = self.device_dir(name)
        start = int((real / "resource").read_text(), 16)
        end = start + int((real / "size").read_text())
        bs = self.fake.block_size
        return list(range(-(-start // bs), end // bs))

    # -- the kernel -------------------------------------------------------------------------

    def _emit(self, action: str, name: str, **env: str) -> bytes:
        devpath = "/" + str(self.device_dir(name).relative_to(self.fake.sys))
        self.fake._seqnum += 1
        data = encode(action, devpath, {"SUBSYSTEM": "dax", **env, "SEQNUM": str(self.fake._seqnum)})
        self._broadcast([data])
        return data

    def _broadcast(self, events: Iterable[bytes]) -> None:
        for data in events:
            self.events.append(data)
            for listener in list(self.listeners):
                listener(data)
        seqnum = self.fake.sys / "kernel/uevent_seqnum"  # the last seqnum the kernel handed out
        seqnum.parent.mkdir(parents=True, exist_ok=True)
        seqnum.write_text(f"{self.fake._seqnum}\n")

    def _store(self, path: Path, value: str) -> bool:
        """A write under the dax bus: a driver's file, or a device's ``memmap_on_memory``."""
        parent = Path(os.path.realpath(path.parent))
        if parent.parent == self.drivers and path.name in _DRIVER_FILES:
            self.ops.append((parent.name, path.name, value.strip()))
            getattr(self, f"_{path.name}")(parent.name, value.strip(), path)
            return True
        if path.name == "state" and parent.parent.parent == self.region:
            self._state(parent.name, value.strip(), path)
            return True
        if path.name == "memmap_on_memory" and parent.parent.parent == self.region:
            if not (parent / "memmap_on_memory").exists():
                raise oserror(errno.ENOENT, path)
            if value.strip() not in ("0", "1"):
                raise oserror(errno.EINVAL, path)
            if self.driver(parent.name) == KMEM:
                raise oserror(errno.EBUSY, path)
            (parent / "memmap_on_memory").write_text(value.strip() + "\n")
            return True
        return False

    def _new_id(self, driver: str, name: str, path: Path) -> None:
        self.ids[driver].add(name)
        if name in self.names() and not self.driver(name):
            try:
                self._probe(name, driver)
            except OSError:
                pass  # driver_attach() ignores a failed probe

    def _remove_id(self, driver: str, name: str, path: Path) -> None:
        self.ids[driver].discard(name)

    def _unbind(self, driver: str, name: str, path: Path) -> None:
        if name not in self.names() or self.driver(name) != driver:
            raise oserror(errno.ENODEV, path)
        (self.device_dir(name) / "driver").unlink()
        (self.device_dir(name) / "state").unlink(missing_ok=True)  # kmem's attribute goes with it
        self._emit("unbind", name)

    def _bind(self, driver: str, name: str, path: Path) -> None:
        if name not in self.names() or (driver == KMEM and name not in self.ids[KMEM]):
            raise oserror(errno.ENODEV, path)
        if self.driver(name):
            raise oserror(errno.EBUSY, path)
        self._probe(name, driver)

    def _probe(self, name: str, driver: str) -> None:
        """The driver's probe: kmem adds the memory (or fails as told), then the device is bound."""
        real = self.device_dir(name)
        if driver == KMEM:
            if self.refusals[name]:
                raise oserror(self.refusals[name].popleft(), self.drivers / KMEM / "bind")
            node = int((real / "target_node").read_text())
            fresh = [i for i in self.blocks(name) if i not in set(self.fake.indices())]
            self._broadcast(self.fake.hot_add(fresh, node))
            if self.has_state:  # the probe's online type: auto_online_blocks ("offline": blocks present, offline)
                (real / "state").write_text((self.fake.knob("auto_online_blocks") or "offline") + "\n")
        (real / "driver").symlink_to(os.path.relpath(self.drivers / driver, real))
        self._emit("bind", name, DRIVER=driver)

    def _state(self, name: str, value: str, path: Path) -> None:
        """``state_store`` of the 2026 kmem driver (Gregory Price's "atomic whole-device hotplug").

        ``unplugged`` offlines and removes every block at once (a refusal rolls it all back);
        ``online``, ``online_kernel``, ``online_movable`` add and online every block, only from
        ``unplugged`` (EBUSY otherwise); ``offline`` is reported, never written (EINVAL).
        """
        current = self.state(name)
        if current is None:
            raise oserror(errno.ENOENT, path)
        if value not in ("unplugged", "online", "online_kernel", "online_movable"):
            raise oserror(errno.EINVAL, path)
        self.state_writes.append((name, value))
        if value == current:
            return
        if value != "unplugged" and current != "unplugged":
            raise oserror(errno.EBUSY, path)
        if self.state_refusals[name]:
            raise oserror(self.state_refusals[name].popleft(), path)
        real = self.device_dir(name)
        present = [i for i in self.blocks(name) if i in set(self.fake.indices())]
        events = []
        if value == "unplugged":
            for index in present:
                if self.fake.state(index) != "offline":
                    self.fake.set_state(index, "offline", ("Movable", "Normal"))
                    events.append(self.fake.uevent("offline", index))
            for index in present:
                self.fake.remove_block(index)
                events.append(self.fake.uevent("remove", index))
        else:
            node = int((real / "target_node").read_text())
            added = self.fake.add_blocks([i for i in self.blocks(name) if i not in present], node)
            events += [self.fake.uevent("add", i) for i in added]
            events += [self.fake.kernel_online(i, value) for i in added]
        (real / "state").write_text(value + "\n")
        self._broadcast(events)
