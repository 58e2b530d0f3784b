"""The QMP monitor (qemu.qmp at the edge): events in order, a lost monitor, connect failures as QmpError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from qga_fakes import FakeMonitor

from hotplugd_qga.qmp import Monitor, QmpError

pytestmark = pytest.mark.asyncio


async def test_events_in_order_then_the_loss_is_an_error(tmp_path: Path) -> None:
    fake = FakeMonitor(tmp_path / "qmp.sock")
    seen: list[tuple[str, dict[str, Any]]] = []
    async with anyio.create_task_group() as tg:
        await fake.serve(tg)
        monitor = await Monitor.connect(str(fake.path), 5, "vm0")
        await fake.dimm_added()
        await fake.emit("VSERPORT_CHANGE", {"id": "qgaport", "open": False})
        await fake.drop()  # QEMU exits: the events sent before still arrive
        with pytest.raises(QmpError, match="the monitor closed"):
            await monitor.run(lambda name, data: seen.append((name, data)))
        await monitor.aclose()
        tg.cancel_scope.cancel()
    assert [name for name, _ in seen] == ["ACPI_DEVICE_OST", "VSERPORT_CHANGE"]
    assert seen[1][1] == {"id": "qgaport", "open": False}


async def test_no_socket_is_a_qmp_error(tmp_path: Path) -> None:
    with pytest.raises(QmpError, match="No such file"):
        await Monitor.connect(str(tmp_path / "none.sock"), 5)


async def test_a_silent_or_foreign_server_is_a_qmp_error(tmp_path: Path) -> None:
    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async def foreign(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b'{"hello": "not qmp"}\n')
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        for name, handler in (("silent", silent), ("foreign", foreign)):
            listener = await anyio.create_unix_listener(tmp_path / f"{name}.sock")
            tg.start_soon(listener.serve, handler)
        with pytest.raises(QmpError, match="no QMP session within 0.1 s"):
            await Monitor.connect(str(tmp_path / "silent.sock"), 0.1)
        with pytest.raises(QmpError, match="foreign.sock"):
            await Monitor.connect(str(tmp_path / "foreign.sock"), 5)
        tg.cancel_scope.cancel()
