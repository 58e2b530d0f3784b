"""hotplugd's ``qga`` backend: online guests' hot-added memory from the hypervisor host.

hotplugd runs on the host, beside QEMU, and drives each guest's
qemu-guest-agent (``guest-get-memory-blocks``, ``guest-set-memory-blocks``)
over the agent's chardev socket; the guests run no daemon of their own. It
hears of added memory through a QMP monitor of its own per guest and by
polling each guest's block list. A DIMM's blocks come from QEMU, with no
listing before they are onlined: ``ACPI_DEVICE_OST`` (the guest created them)
names the pc-dimm, ``query-memory-devices`` gives its address and size, hence
its phys-indices; a listing follows as the safety net, and is the fallback
whenever something is missing (``dimms.py``). ``MEMORY_DEVICE_SIZE_CHANGE``
(virtio-mem) starts fast polling of the block list. Guests must boot with
``memhp_default_state=offline`` (or their kernel onlines by itself: ``hotplugd
check`` says so). docs/qga.md has the QEMU wiring and the design.

Each guest is a *domain* of the core, named by the guest's name: its own
queue, deferral and final phases, run at the same time as the other guests'.
``Block.index`` is the guest's ``phys-index``, ``Block.node`` is 0 (the agent
does not tell NUMA nodes). Each guest's topology (online vCPUs, MemAvailable,
block size, whether its kernel onlines by itself) is read through its agent.
The agent writes ``online``: each guest's kernel picks the zone, and a zone
policy other than ``auto`` is logged once and not applied.

The ``[plugins.qga]`` table:

- ``guest``: an array of tables, one per guest: ``name``, ``qga`` (QEMU's
  socket of the ``org.qemu.guest_agent.0`` port), optionally ``qmp`` (a QMP
  monitor for hotplugd alone), ``port_id`` (the agent port's ``id=``, whose
  ``VSERPORT_CHANGE`` events tell the agent is up or down) and ``concurrency``.
- ``guest_dirs``: a table or an array of tables, one per directory layout of a
  hypervisor manager: ``glob`` (e.g. ``"/run/vms/*"``: one directory per guest,
  named after it), ``qga`` (default ``"qga.sock"``), ``qmp``, ``port_id`` (paths
  relative to each directory) and ``concurrency``. A guest is present while its
  ``qga`` socket exists; looked at again every ``discover_interval`` (default 5 s).
  ``guest`` or ``guest_dirs`` is needed (with ``backend = "qga"``).
- ``concurrency`` (default 1): blocks one guest's kernel onlines at once (mainline
  onlines one at a time); a guest's own ``concurrency`` overrides it.
- ``parallel_guests`` (default 0: all): guests running a final phase at once.
- ``poll_interval`` (default 5 s): the fallback poll of every guest's block list.
- ``resize_poll_interval`` (default 100 ms): the poll while memory is being added.
- ``resize_quiet`` (default 1.5 s): adding is over when no block appeared and no
  memory event came for this long.
- ``timeout`` (default 5 s): one agent request; ``online_timeout_per_block``
  (default 100 ms) is added per block of a ``guest-set-memory-blocks``.
- ``reconnect_interval`` (default 1 s), doubled after each further failure up to
  ``reconnect_max`` (default 30 s): how long an agent (or monitor) that failed is left alone.
- ``max_batch`` (default 256): blocks in one ``guest-set-memory-blocks`` (the
  backend's ``batch_size``: a phase hands a guest its run of blocks in one call).
- ``verify`` (default false): re-read the guest's block list after each batch. The
  agent reports ``success`` only when the write succeeded or the block was online
  already; a listing costs as much as onlining a few blocks, so by default the
  backend trusts it and tells "already online" from its last listing.

Registered through the ``hotplugd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hotplugd import BackendRegistry, BackendSubject, Config, ConfigProblem, hookimpl

from .agent import AgentClient, AgentError, AgentTimeout, AgentUnavailable, CommandFailed
from .discover import find_guests
from .settings import GuestDirSettings, GuestSettings, Settings, parse

if TYPE_CHECKING:
    from .backend import QgaBackend

__all__ = ["AgentClient", "AgentError", "AgentTimeout", "AgentUnavailable", "CommandFailed", "GuestDirSettings",
           "GuestSettings", "QgaBackend", "Settings", "find_guests", "parse"]


def __getattr__(name: str) -> Any:
    """``QgaBackend`` on first use: its QMP client (``qemu.qmp``) is imported only by who builds one."""
    if name == "QgaBackend":
        from .backend import QgaBackend

        return QgaBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build(options: Mapping[str, Any]) -> QgaBackend:
    """The backend, imported when the config chooses it: a host that does not use qga never
    imports ``qemu.qmp``, so a broken install of it stops nothing there."""
    from .backend import QgaBackend

    return QgaBackend.from_options(options)


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add("qga", _build, summary="guests onlined from the hypervisor host through qemu-guest-agent",
                 subject=BackendSubject("the guests' memory, through their qemu-guest-agent", "the guests"))


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if "qga" in plugins or config.backend == "qga":
        parse(plugins.get("qga", {}), problems, require_guests=config.backend == "qga")
    return problems
