"""The guest backends' shared base (``hotplugd_guestagent.fleet.GuestFleet``) and their shared validators,
on a fleet of in-memory agents: each guest's task, guests adopted and dropped at run time, the watch for
guests appearing (coalesced wake-ups, every ``discover_interval`` otherwise), the table's checks."""

from __future__ import annotations

import anyio
import pytest
from qga_fakes import BLOCK, AgentOptions, MemoryAgent
from qga_run import started

from hotplugd import Action, BlockEvent, ConfigProblem, Rescan
from hotplugd.testing import wait_until
from hotplugd_guestagent.fleet import GuestFleet
from hotplugd_guestagent.link import AgentLink
from hotplugd_guestagent.validators import fleet_problems, name_problem


class Fleet(GuestFleet[AgentLink]):
    kind = "test"
    member = "guest"

    def __init__(self, options: AgentOptions) -> None:
        super().__init__(options, 0)
        self.rediscovered = 0
        self.released: list[str] = []

    async def rediscover(self) -> None:
        self.rediscovered += 1

    async def release(self, link: AgentLink) -> None:
        self.released.append(link.name)


def link(name: str, agent: MemoryAgent, options: AgentOptions) -> AgentLink:
    return AgentLink(name, options, agent, kind="test")


async def streaming(fleet: Fleet) -> None:
    """Until the fleet's stream runs its task group and its tasks have started."""
    await wait_until(lambda: fleet._tasks is not None, what="the stream's task group")
    await anyio.sleep(0)


@pytest.mark.asyncio
async def test_a_guest_adopted_at_run_time_is_listed_at_once_and_a_dropped_one_leaves_no_task() -> None:
    options = AgentOptions()
    fleet = Fleet(options)
    agent = MemoryAgent({0: True, 8: False, 9: False})
    async with started(fleet) as seen:
        await streaming(fleet)
        vm1 = link("vm1", agent, options)
        fleet.adopt(vm1)
        await wait_until(lambda: len([e for e in seen if isinstance(e, BlockEvent)]) >= 4, what="its blocks")
        adds = [(e.action, e.index, e.domain) for e in seen if isinstance(e, BlockEvent)]
        assert adds == [(Action.ADD, 0, "vm1"), (Action.ONLINE, 0, "vm1"), (Action.ADD, 8, "vm1"),
                        (Action.ADD, 9, "vm1")]
        assert (await fleet.topology()).domains["vm1"].block_size == BLOCK

        seen.clear()
        await fleet.drop("vm1", reason="test")
        assert "vm1" not in fleet.links and fleet.released == ["vm1"]
        await wait_until(lambda: any(isinstance(e, Rescan) for e in seen), what="the rescan")
        assert [(e.action, e.index) for e in seen if isinstance(e, BlockEvent)] == [
            (Action.REMOVE, 0), (Action.REMOVE, 8), (Action.REMOVE, 9)]
        assert isinstance(seen[-1], Rescan) and seen[-1].reason == "guest_gone"
        sent = len(agent.requests)
        vm1.wake()
        await anyio.sleep(0.1)
        assert len(agent.requests) == sent  # the dropped guest's poller is gone: nobody lists it


@pytest.mark.asyncio
async def test_the_watch_reads_the_guest_list_again_once_for_a_burst_of_wake_ups_and_on_its_interval() -> None:
    fleet = Fleet(AgentOptions())
    async with started(fleet):
        await streaming(fleet)
        assert fleet.rediscovered == 0  # not before its interval (an hour here) or a wake-up
        await wait_until(lambda: fleet._rediscover_wanted is not None, what="the watch")
        for _ in range(5):
            fleet.want_rediscover()
        await wait_until(lambda: fleet.rediscovered >= 1, what="one reading")
        await anyio.sleep(0.1)
        assert fleet.rediscovered == 1

    often = Fleet(AgentOptions(discover_interval=0.05))
    async with started(often):
        await wait_until(lambda: often.rediscovered >= 3, what="readings on the interval")


@pytest.mark.asyncio
async def test_a_fleet_whose_guests_never_change_runs_no_watch() -> None:
    class Fixed(Fleet):
        watches_guests = False

    fleet = Fixed(AgentOptions(discover_interval=0.01))
    async with started(fleet):
        await streaming(fleet)
        fleet.want_rediscover()
        await anyio.sleep(0.1)
    assert fleet.rediscovered == 0


def test_a_guest_name_is_non_empty_without_white_space() -> None:
    assert name_problem("vm-1") is None and name_problem("web-*") is None
    for bad in ("", " ", "vm 1", "vm\t1", 3, None):
        assert "expected a non-empty name without spaces" in (name_problem(bad) or "")


def test_the_table_as_a_whole_wants_its_guests_named_and_a_backoff_that_can_double() -> None:
    missing = ConfigProblem("plugins.x.guest", "no guest configured", "name one")
    assert fleet_problems(AgentOptions(), "plugins.x") == []
    assert fleet_problems(AgentOptions(), "plugins.x", missing) == [missing]
    short = AgentOptions(reconnect_interval=10.0, reconnect_max=5.0)
    assert [(p.key, p.message) for p in fleet_problems(short, "plugins.x", missing)] == [
        ("plugins.x.guest", "no guest configured"), ("plugins.x.reconnect_max", "is shorter than reconnect_interval")]
