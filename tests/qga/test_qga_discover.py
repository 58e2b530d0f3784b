"""Guests found in directories (``guest_dirs``): which directories are guests, and guests that
appear and disappear while the backend (and the daemon) run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from qga_fakes import vm_dirs

from hotplugd import Action, BlockEvent, Rescan
from hotplugd.testing import running, wait_until
from hotplugd_qga import GuestDirSettings, GuestSettings, QgaBackend, find_guests, parse

NEVER = 3600


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def _socket_file(path: Path, sockets: list[socket.socket]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    sockets.append(s)


def test_a_directory_is_a_guest_while_its_agent_socket_exists(tmp_path: Path, sockets: list) -> None:
    _socket_file(tmp_path / "vms/web" / "qga.sock", sockets)
    _socket_file(tmp_path / "vms/db" / "qga.sock", sockets)
    (tmp_path / "vms/stopped").mkdir()  # a stopped guest's directory lingers, without sockets
    (tmp_path / "vms/notes.txt").write_text("not a guest")
    _socket_file(tmp_path / "vms/with space" / "qga.sock", sockets)
    layout = GuestDirSettings(f"{tmp_path}/vms/*", "qga.sock", "hotplugd-qmp.sock", "qgaport", concurrency=2)
    found = find_guests([layout])
    assert found.guests == {
        name: GuestSettings(name, f"{tmp_path}/vms/{name}/qga.sock", f"{tmp_path}/vms/{name}/hotplugd-qmp.sock",
                            "qgaport", 2) for name in ("db", "web")}
    assert list(found.guests) == ["db", "web"]  # sorted by directory
    assert list(found.skipped) == [f"{tmp_path}/vms/with space"]
    assert "without spaces" in found.skipped[f"{tmp_path}/vms/with space"]


def test_configured_names_win_then_the_first_pattern(tmp_path: Path, sockets: list) -> None:
    for path in ("a/web", "a/db", "b/web", "b/cache"):
        _socket_file(tmp_path / path / "qga.sock", sockets)
    layouts = [GuestDirSettings(f"{tmp_path}/a/*"), GuestDirSettings(f"{tmp_path}/b/*")]
    found = find_guests(layouts, taken={"db"})
    assert {n: g.qga for n, g in found.guests.items()} == {
        "web": f"{tmp_path}/a/web/qga.sock", "cache": f"{tmp_path}/b/cache/qga.sock"}
    assert "[[plugins.qga.guest]]" in found.skipped[f"{tmp_path}/a/db"]
    assert "found first in" in found.skipped[f"{tmp_path}/b/web"]


def test_a_socket_path_too_long_for_a_unix_address_is_skipped(tmp_path: Path, sockets: list) -> None:
    _socket_file(tmp_path / "vms/vm1" / "q.sock", sockets)
    found = find_guests([GuestDirSettings(f"{tmp_path}/vms/*", "q.sock", "x" * 120)])
    assert found.guests == {} and "at most 107 bytes" in found.skipped[f"{tmp_path}/vms/vm1"]


def _backend(root: Path, **options: Any) -> QgaBackend:
    dirs = {"glob": f"{root}/*", "qga": "qga.sock", "qmp": "hotplugd-qmp.sock", "port_id": "qgaport"}
    return QgaBackend(parse({"guest_dirs": dirs, "discover_interval": 0.1, "poll_interval": NEVER, **options}))


@pytest.mark.asyncio
async def test_guests_appear_and_disappear_while_the_backend_runs(tmp_path: Path) -> None:
    root = tmp_path / "vms"
    async with vm_dirs(root) as vms:
        a = await vms.start("a")
        a.agent.add(range(0, 4), online=True)
        a.agent.add([32])
        b = _backend(root)
        await b.start()
        seen: list[BlockEvent | Rescan] = []

        async def collect() -> None:
            async for event in b.events():
                seen.append(event)

        try:
            assert list(b.guests) == ["a"]
            assert [(x.domain, x.index) for x in (await b.scan()).blocks] == [("a", i) for i in (0, 1, 2, 3, 32)]
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect)
                g = await vms.start("b")  # a guest started at run time, same phys-indices as a
                g.agent.add([0], online=True)
                g.agent.add([32, 33])
                await wait_until(lambda: {(e.domain, e.index) for e in seen if e.action is Action.ADD}
                                 == {("b", 0), ("b", 32), ("b", 33)}, what="b's blocks as adds")
                assert b.domain_concurrency("b") == 1 and "b" in (await b.topology()).domains
                vms.stop("a")  # its QEMU exited: its sockets are gone
                await wait_until(lambda: any(isinstance(e, Rescan) for e in seen), what="a rescan for a")
                assert list(b.guests) == ["b"] and "a" not in (await b.topology()).domains
                removed = [(e.domain, e.index) for e in seen if isinstance(e, BlockEvent) and e.action is Action.REMOVE]
                assert removed == [("a", i) for i in (0, 1, 2, 3, 32)]
                assert [e.reason for e in seen if isinstance(e, Rescan)] == ["guest_gone"]
                tg.cancel_scope.cancel()
        finally:
            await b.stop()


@pytest.mark.asyncio
async def test_the_daemon_onlines_guests_that_appear_and_drops_those_that_go(
        tmp_path: Path, make_daemon: Any) -> None:
    root = tmp_path / "vms"
    async with vm_dirs(root) as vms:
        first = await vms.start("first")
        first.agent.add(range(0, 2), online=True)
        first.agent.add([32, 33])
        config = {"plugins": {"qga": {"guest_dirs": {"glob": f"{root}/*", "qmp": "hotplugd-qmp.sock"},
                                      "discover_interval": 0.1, "poll_interval": NEVER}}}
        daemon = make_daemon("qga", config, entry_points=True)
        async with running(daemon):
            await wait_until(lambda: first.agent.online_indices() == {0, 1, 32, 33}, what="first's coldplug")
            late = await vms.start("late")
            late.agent.add([32, 33, 34])
            await wait_until(lambda: late.agent.online_indices() == {32, 33, 34}, what="the late guest onlined")
            assert {"first", "late"} <= set(daemon.scheduler.domains)
            vms.stop("first")
            await wait_until(lambda: "first" not in daemon.scheduler.domains, what="first's domain dropped")
            assert "late" in daemon.scheduler.domains
            daemon.scheduler.stop()
