"""Hostile guests through the backend: down with a reason, lies caught, one guest's flood never holds up another's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hostile import HostileAgent, repeated
from qga_fakes import FakeAgent, FakeMonitor, FakeVM, fake_vms
from qga_run import started
from structlog.testing import capture_logs

from hotplugd import Action, BlockEvent, Outcome, State, ZoneRequest
from hotplugd.testing import ManualClock, wait_until
from hotplugd_qga import QgaBackend, parse
from hotplugd_qga.guest import GuestLink
from hotplugd_qga.settings import GuestSettings, Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.reliability]

LISTING = "guest-get-memory-blocks"
NEVER = 3600


@asynccontextmanager
async def guests(directory: Path, *agents: FakeAgent) -> AsyncIterator[list[FakeVM]]:
    """``agents`` serving in ``directory`` as guests vm0, vm1, ... (their monitors unused)."""
    vms = [FakeVM(f"vm{i}", agent, FakeMonitor(directory / f"vm{i}-qmp.sock")) for i, agent in enumerate(agents)]
    async with anyio.create_task_group() as tg:
        for vm in vms:
            vm.agent.files["/sys/devices/system/memory/auto_online_blocks"] = "offline\n"
            await vm.agent.serve(tg)
        yield vms
        tg.cancel_scope.cancel()


def link(vm: FakeVM, clock: Any = None, **options: Any) -> GuestLink:
    settings = GuestSettings(vm.name, str(vm.agent.path))
    return GuestLink(settings, Settings(guests=(settings,), **options), **({"clock": clock} if clock else {}))


def listing(*items: dict[str, Any]) -> list[bytes]:
    return [json.dumps({"return": list(items)}).encode() + b"\n"]


async def test_a_guest_whose_agent_breaks_the_protocol_is_down_with_the_reason(tmp_path: Path) -> None:
    agent = HostileAgent(tmp_path / "a.sock")
    agent.replies[LISTING] = lambda request: [b'{"return": ', b"[" * 100_000]
    async with guests(tmp_path, agent) as [vm]:
        clock = ManualClock()
        guest = link(vm, clock)
        with capture_logs() as logs:
            assert await guest.refresh() == []
        assert not guest.available and guest.down_reason == "protocol_error"
        assert "DOWN protocol_error" in repr(guest)
        down = [e for e in logs if e["event"] == "qga_agent_down"]
        assert [(e["guest"], e["reason"]) for e in down] == [("vm0", "protocol_error")]
        del agent.replies[LISTING]  # the agent behaves again
        agent.add([32])
        clock.advance(guest.backoff())
        assert [e.action for e in await guest.refresh()] == [Action.ADD]
        assert guest.healthy and guest.down_reason is None


@pytest.mark.parametrize("phys", [-1, 1 << 40, True])
async def test_a_listing_of_blocks_no_guest_can_have_is_not_believed(tmp_path: Path, phys: object) -> None:
    agent = HostileAgent(tmp_path / "a.sock")
    agent.replies[LISTING] = lambda request: listing({"phys-index": phys, "online": False, "can-offline": True})
    async with guests(tmp_path, agent) as [vm]:
        guest = link(vm)
        assert await guest.refresh() == []
        assert guest.down_reason == "protocol_error" and not guest.snapshot


async def test_a_success_the_next_listing_contradicts_is_caught(tmp_path: Path) -> None:
    agent = HostileAgent(tmp_path / "a.sock", lie={33})
    agent.add(range(32, 35))
    async with guests(tmp_path, agent) as [vm]:
        guest = link(vm)
        await guest.scan()
        results = await guest.online_many([32, 33, 34])
        assert [r.outcome for r in results] == [Outcome.ONLINED] * 3  # the agent's word, for now
        with capture_logs() as logs:
            events = await guest.refresh()
        assert [(e.action, e.index) for e in events] == [(Action.ONLINE, 32), (Action.ONLINE, 34), (Action.OFFLINE, 33)]
        assert guest.down_reason == "false_success"
        lied = [e for e in logs if e["event"] == "qga_false_success"]
        assert [(e["guest"], e["blocks"]) for e in lied] == [("vm0", [33])]


async def test_a_success_the_read_back_contradicts_is_an_error_naming_the_guest(tmp_path: Path) -> None:
    agent = HostileAgent(tmp_path / "a.sock", lie={33})
    agent.add(range(32, 35))
    async with guests(tmp_path, agent) as [vm]:
        guest = link(vm, verify=True)
        await guest.scan()
        with capture_logs() as logs:
            results = await guest.online_many([32, 33, 34])
        assert [r.outcome for r in results] == [Outcome.ONLINED, Outcome.ERROR, Outcome.ONLINED]
        assert [(e["guest"], e["blocks"]) for e in logs if e["event"] == "qga_false_success"] == [("vm0", [33])]


async def test_a_reply_for_blocks_not_asked_about_is_an_error_naming_the_guest(tmp_path: Path) -> None:
    agent = HostileAgent(tmp_path / "a.sock")
    agent.add(range(32, 34))
    agent.replies["guest-set-memory-blocks"] = lambda request: listing(
        {"phys-index": 99, "response": "success"}, {"phys-index": 33, "response": "success"})
    async with guests(tmp_path, agent) as [vm]:
        guest = link(vm)
        await guest.scan()
        with capture_logs() as logs:
            results = await guest.online_many([32, 33])
        assert [r.outcome for r in results] == [Outcome.ERROR, Outcome.ONLINED]
        assert [(e["guest"], e["block"], e["answered"]) for e in logs if e["event"] == "qga_reply_mismatch"] == [
            ("vm0", 32, 99)]


async def test_one_guest_flooding_its_agent_does_not_hold_up_anothers_onlining(tmp_path: Path) -> None:
    """Guest vm0's agent answers its listing with 12 MiB of empty lines, then an array 100,000 deep;
    guest vm1 hot-added 8 blocks meanwhile. vm1's blocks are all onlined, in one batch, while vm0's
    flood is still being read; vm0 then ends down (protocol_error) and nothing reached the caller."""
    flooder = HostileAgent(tmp_path / "a.sock")
    flooder.replies[LISTING] = lambda request: [*repeated(b"\n", 12 << 20), b"[" * 100_000]
    quiet = FakeAgent(tmp_path / "b.sock")
    quiet.add(range(32, 40))
    async with guests(tmp_path, flooder, quiet) as vms:
        b = QgaBackend(parse({"guest": [vm.table(qmp=False) for vm in vms], "poll_interval": NEVER}))
        a, bee = b.guests["vm0"], b.guests["vm1"]
        seen: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.scan)
            await wait_until(lambda: flooder.flooded > 0, what="vm0's flood under way")
            await bee.scan()
            blocks = [blk for blk in bee.blocks() if blk.state is State.OFFLINE]
            results = await b.online_many([(blk, ZoneRequest.AUTO) for blk in blocks])
            seen.update(a_healthy=a.healthy, a_read=a.client.discarded, a_flooded=flooder.flooded)
        assert [r.outcome for r in results] == [Outcome.ONLINED] * 8
        assert quiet.online_indices() == set(range(32, 40)) and quiet.set_calls() == [list(range(32, 40))]
        assert seen["a_healthy"] and seen["a_flooded"] < 12 << 20  # vm1 was done before vm0's flood ended
        assert a.down_reason == "protocol_error" and flooder.flooded >= 12 << 20


async def test_a_flood_of_dimm_events_makes_one_query_at_a_time(tmp_path: Path) -> None:
    """The guest's kernel runs _OST at will: 200 insertion events for one DIMM while its query runs."""
    async with fake_vms(tmp_path) as [vm]:
        b = QgaBackend(parse({"guest": [vm.table()], "poll_interval": NEVER, "resize_quiet": 600}))
        async with started(b) as seen:
            await vm.monitor.negotiated.wait()
            vm.hot_add_dimm("dimm0", 32, 4)
            vm.monitor.hold_commands()
            for _ in range(200):
                await vm.monitor.dimm_added("dimm0")
            await wait_until(lambda: vm.monitor.commands == ["query-memory-devices"], what="the first query")
            vm.monitor.release_commands()
            adds = lambda: [e.index for e in seen if isinstance(e, BlockEvent) and e.action is Action.ADD]  # noqa: E731
            await wait_until(lambda: adds() == [32, 33, 34, 35], what="the DIMM's adds")
            await anyio.sleep(0.05)  # room for more queries, if the flood queued any
            assert vm.monitor.commands == ["query-memory-devices"]
