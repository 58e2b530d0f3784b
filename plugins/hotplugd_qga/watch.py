"""The per-guest tasks behind the backend's event stream: a poller and a QMP listener.

The poller lists the guest's blocks when woken (a QMP memory event), every
``resize_poll_interval`` while memory is being added, and every
``poll_interval`` otherwise (the fallback: a guest without a QMP monitor,
or a lost event). The listener turns QEMU's events into wake-ups:
``ACPI_DEVICE_OST`` for a DIMM (sent once the guest created the blocks),
``MEMORY_DEVICE_SIZE_CHANGE`` for virtio-mem (at most one a second per device,
and virtio-mem stops plugging at 1 GiB left offline: hence the fast polling),
and ``VSERPORT_CHANGE`` of the agent's port (the agent is up or down).
:func:`run_guest` runs both; the backend cancels it when the guest goes away.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import ObjectSendStream

from hotplugd import BlockEvent, Rescan

from .guest import GuestLink
from .qmp import Monitor, QmpError

log = structlog.get_logger("hotplugd.qga")


async def poll_guest(guest: GuestLink, send: ObjectSendStream[BlockEvent | Rescan]) -> None:
    """Forever: wait for the next poll, list the guest's blocks, send what changed."""
    while True:
        await guest.next_poll()
        for event in await guest.refresh():
            await send.send(event)


async def listen_guest(guest: GuestLink, monitor: Monitor | None) -> None:
    """Forever: feed the guest's QMP events to it; reconnect (with backoff, then poll at once) after a lost monitor."""
    path, options = guest.settings.qmp, guest.options
    failures = 0
    while True:
        try:
            if monitor is None:
                monitor = await Monitor.connect(path, options.timeout, guest.name)
                log.info("qmp_monitor_connected", guest=guest.name, path=path)
                guest.memory_event()  # events may have been missed while it was away
            failures = 0
            await monitor.run(guest.on_event)
        except QmpError as exc:
            if failures == 0:
                log.warning("qmp_monitor_lost", guest=guest.name, path=path, error=str(exc))
            failures += 1
        finally:
            if monitor is not None:
                await monitor.aclose()
            monitor = None
        await anyio.sleep(min(options.reconnect_max, options.reconnect_interval * 2 ** max(0, failures - 1)))


async def run_guest(guest: GuestLink, send: ObjectSendStream[BlockEvent | Rescan], monitor: Monitor | None) -> None:
    """The guest's poller and (with a ``qmp`` socket) its listener, until cancelled."""
    async with send, anyio.create_task_group() as tg:
        if guest.settings.qmp:
            tg.start_soon(listen_guest, guest, monitor)
        await poll_guest(guest, send)
