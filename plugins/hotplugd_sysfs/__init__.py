"""hotplugd's ``sysfs`` backend: the one real hosts run.

It reads ``/sys/devices/system/memory`` (block size, every ``memoryN``: state,
``valid_zones``, ``phys_index``, ``removable``, its node from the ``nodeN``
link), the CPUs of each node from ``/sys/devices/system/node/nodeN/cpulist``
and MemAvailable from ``/proc/meminfo``; listens to the kernel's uevents on a
``NETLINK_KOBJECT_UEVENT`` socket; and onlines a block by writing ``online``,
``online_kernel`` or ``online_movable`` to its ``state``, then re-reading it.
It also reads and writes the kernel's own onlining knobs (:mod:`.knobs`:
``auto_online_blocks`` and the ``memory_hotplug`` parameters), which the core's
plan sets, and reads back the blocks the kernel onlined (``verify()``).

The ``[plugins.sysfs]`` table:

- ``root`` (default ``"/sys"``): the sysfs root; every sysfs path is built from it.
- ``proc`` (default ``"/proc"``): the proc root (``meminfo``).
- ``udev_rules_dirs`` (default ``/etc/udev/rules.d``, ``/run/udev/rules.d``,
  ``/usr/lib/udev/rules.d``, highest priority first): where conflicting rules are looked for.
- ``concurrency`` (default 1): online calls that can truly run at once. Mainline
  serialises every sysfs online under ``device_hotplug_lock``.
- ``batch`` (default 32): blocks one online call writes back to back.
- ``rcvbuf`` (default ``"32MiB"``): the netlink receive buffer.
- ``netlink`` (default true): false opens no socket; events then come only from
  ``SysfsBackend.feed()`` (tests on a fake tree, see :mod:`hotplugd_sysfs.testing.fakesysfs`).
- ``writer`` (default ``"process"``): who writes ``state``. ``"process"``: a small
  child process (:mod:`hotplugd_sysfs.writer_child`, standard library only), so
  that the writes, which block in the kernel, never wait for the daemon's
  interpreter lock while it reads a hot-add's uevents; ``"thread"``: a worker thread.
- ``dax`` (default none): ``[[plugins.sysfs.dax]]`` rules naming the dax devices to convert
  to system RAM (``device``, or ``match`` by ``path``, ``node``, ``resource``, ``uuid``;
  ``memmap_on_memory``): :mod:`.daxrules`, ``docs/dax.md``. Their memory blocks carry the
  device's name (``Block.source``) and follow ``[zones.dax]``; every other device is left alone.

The kernel announces a block (its ``add`` uevent) before it links the block to
its node; until the ``nodeN`` link exists, reading ``valid_zones`` oopses 6.1
kernels (``NODE_DATA(NUMA_NO_NODE)``). The backend therefore reads nothing but
the directory of an unlinked block and retries briefly (:class:`NotRegistered`).

Registered through the ``hotplugd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hotplugd import BackendRegistry, BackendSubject, Config, ConfigProblem, HostBackend, InstallFiles, hookimpl

from . import installs
from .backend import SysfsBackend
from .intake import Drop, Intake, MemoryUEvent
from .settings import Settings, parse
from .sysfs import BlockInfo, NotRegistered, Sysfs, SysfsIO
from .uevent import UEvent

__all__ = ["BlockInfo", "Drop", "Intake", "MemoryUEvent", "NotRegistered", "Settings", "Sysfs", "SysfsBackend",
           "SysfsIO", "UEvent"]


def _root(table: Mapping[str, Any]) -> str:
    """The table's sysfs root, as check and status name it before the table is validated."""
    root = table.get("root", "/sys")
    return root if isinstance(root, str) else "/sys"


def subject(options: Mapping[str, Any]) -> BackendSubject:
    """This host's memory, under the configured sysfs root."""
    return BackendSubject(f"this host (its memory under {_root(options)})", "this host", host=True)


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add("sysfs", SysfsBackend.from_options,
                 summary="a real Linux host: sysfs memory blocks, netlink uevents", subject=subject)


@hookimpl
def hotplugd_host_backend(config: Config) -> HostBackend:
    """This machine is ours where the root has memory blocks (a blocked plugin is never asked)."""
    memory = Path(_root(config.plugins.get("sysfs", {})), "devices/system/memory")
    if memory.is_dir():
        return HostBackend("sysfs", f"{memory} exists, so this host's own")
    return HostBackend(None, f"this machine has no {memory}")


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    parse(plugins.get("sysfs", {}), problems)
    return problems


@hookimpl
def hotplugd_install_files(files: InstallFiles, config: Config) -> None:
    """Masks of distro udev rules that online memory, and the dax drop-in where the config converts devices."""
    installs.install_files(files, config)
