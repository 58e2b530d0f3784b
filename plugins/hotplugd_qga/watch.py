"""The per-guest tasks behind the backend's event stream: a poller and a QMP listener.

The poller lists the guest's blocks when woken (a QMP memory event), every
``resize_poll_interval`` while memory is being added, and every
``poll_interval`` otherwise (the fallback: a guest without a QMP monitor,
or a lost event). The listener turns QEMU's events into block events or wake-ups:
``ACPI_DEVICE_OST`` for a DIMM (sent once the guest created the blocks) into
``add`` events for the DIMM's blocks at once, found by its address
(:mod:`.dimms`, in a task of its own; a listing follows as the safety net, and
is the fallback), ``MEMORY_DEVICE_SIZE_CHANGE`` for virtio-mem into fast polling
(at most one event a second per device, and virtio-mem stops plugging at 1 GiB
left offline), and ``VSERPORT_CHANGE`` of the agent's port (the agent is up or
down). Both send on the guest's clone of the backend's event stream.
:func:`run_guest` runs both, as the guest's task in the shared fleet
(:class:`~hotplugd_guestagent.fleet.GuestFleet`), which cancels it when the guest goes away.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import ObjectSendStream, TaskGroup

from hotplugd import BlockEvent, Rescan
from hotplugd_guestagent.fleet import poll_forever
from hotplugd_guestagent.link import backoff

from .dimms import DimmWatcher
from .guest import GuestLink
from .qmp import Monitor, QmpError

log = structlog.get_logger("hotplugd.qga")


async def listen_guest(guest: GuestLink, monitor: Monitor | None, send: ObjectSendStream[BlockEvent | Rescan],
                       tasks: TaskGroup) -> None:
    """Forever: handle the guest's QMP events (DIMM queries run in ``tasks``); reconnect (with backoff,
    then poll at once) after a lost monitor."""
    path, options = guest.settings.qmp, guest.options
    failures = 0
    while True:
        try:
            if monitor is None:
                monitor = await Monitor.connect(path, options.timeout, guest.name)
                log.info("qmp_monitor_connected", guest=guest.name, path=path)
                guest.memory_event()  # events may have been missed while it was away
            failures = 0
            await monitor.run(DimmWatcher(guest, monitor, send, tasks))
        except QmpError as exc:
            if failures == 0:
                log.warning("qmp_monitor_lost", guest=guest.name, path=path, error=str(exc))
            failures += 1
        finally:
            if monitor is not None:
                await monitor.aclose()
            monitor = None
        await anyio.sleep(backoff(options, failures))


async def run_guest(guest: GuestLink, send: ObjectSendStream[BlockEvent | Rescan], monitor: Monitor | None) -> None:
    """The guest's poller and (with a ``qmp`` socket) its listener, until cancelled."""
    async with send, anyio.create_task_group() as tg:
        if guest.settings.qmp:
            tg.start_soon(listen_guest, guest, monitor, send, tg)
        await poll_forever(guest, send)
