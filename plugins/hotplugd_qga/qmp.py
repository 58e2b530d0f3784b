"""A guest's QEMU events through a QMP monitor of the daemon's own, with QEMU's ``qemu.qmp`` client.

The daemon has its own monitor per guest (a second ``-mon chardev=...,mode=control``
beside the one the management stack uses). ``qemu.qmp`` (the QEMU project's
asyncio QMP library) reads the greeting, negotiates capabilities and queues
events; this module is the edge where its exceptions become :class:`QmpError`
and its connection state becomes "the monitor is lost".

Two things are specific to running it under anyio (on the asyncio backend):

- The connect timeout is ``asyncio.wait_for``, not ``anyio.fail_after``. On a
  failed connect ``qemu.qmp`` awaits its own clean-up; anyio's cancellation is
  level-triggered and would cancel that clean-up too, leaving the client
  half-closed (``Runstate.DISCONNECTING``, measured). ``wait_for`` cancels once.
- The library's event listener never ends when QEMU goes away: :meth:`Monitor.run`
  watches the client's runstate beside it and returns at the disconnect.

Commands (:meth:`Monitor.execute`) may run while :meth:`Monitor.run` reads
events: ``qemu.qmp`` routes replies by id and events to the listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
from qemu.qmp import ConnectError, QMPClient, QMPError, Runstate

#: Called with each event's name and data.
EventHandler = Callable[[str, dict[str, Any]], None]


class QmpError(Exception):
    """The monitor cannot be reached, is not QMP, refused negotiation, or went away."""


def _data(message: Any) -> dict[str, Any]:
    data = message.get("data")
    return dict(data) if isinstance(data, dict) else {}


class Monitor:
    """A negotiated QMP session; :meth:`run` it to receive events."""

    def __init__(self, client: QMPClient, path: str) -> None:
        self.path = path
        self._client = client

    def __repr__(self) -> str:
        return f"<Monitor {self.path} [{self._client.runstate.name}]>"

    @classmethod
    async def connect(cls, path: str, timeout: float, name: str = "") -> Monitor:
        """Connect, read the greeting and negotiate; raise :class:`QmpError`."""
        client = QMPClient(name or None)
        try:
            await asyncio.wait_for(client.connect(path), timeout)
        except TimeoutError:
            raise QmpError(f"{path}: no QMP session within {timeout:g} s") from None
        except ConnectError as exc:
            raise QmpError(f"{path}: {exc}") from None
        except AssertionError:  # qemu.qmp's own check, when QEMU closes right after the negotiation (fuzzed)
            await cls(client, path)._disconnect()
            raise QmpError(f"{path}: the monitor closed during the connection") from None
        return cls(client, path)

    async def execute(self, command: str, timeout: float) -> Any:
        """Run ``command`` and return its ``return`` value; any failure (an error reply, a lost
        monitor, no reply within ``timeout``) raises :class:`QmpError`."""
        try:
            return await asyncio.wait_for(self._client.execute(command), timeout)
        except TimeoutError:
            raise QmpError(f"{self.path}: no reply to {command} within {timeout:g} s") from None
        except QMPError as exc:
            raise QmpError(f"{self.path}: {command}: {exc}") from None

    async def run(self, handle: EventHandler) -> None:
        """Hand every event to ``handle`` until QEMU closes the monitor; then raise :class:`QmpError`."""
        client = self._client

        async def watch(scope: anyio.CancelScope) -> None:
            while client.runstate is Runstate.RUNNING:
                await client.runstate_changed()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            async for message in client.events:
                handle(str(message.get("event")), _data(message))
        for message in client.events.clear():  # queued before the connection was lost
            handle(str(message.get("event")), _data(message))
        raise QmpError(f"{self.path}: the monitor closed ({await self._disconnect() or 'end of file'})")

    async def _disconnect(self) -> str:
        """Finish the client's disconnect; the reason it gave, if any."""
        if self._client.runstate is Runstate.IDLE:
            return ""
        with anyio.CancelScope(shield=True):
            try:
                await self._client.disconnect()
            except Exception as exc:  # noqa: BLE001 - the reader's error (EOFError, OSError, ...), re-raised by design
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ""

    async def aclose(self) -> None:
        await self._disconnect()
