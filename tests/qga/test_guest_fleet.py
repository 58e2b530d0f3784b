"""The guest backends' shared base (``hotplugd_guestagent.fleet.GuestFleet``) and their shared validators,
on a fleet of in-memory agents: each guest's task, guests adopted and dropped at run time, the watch for
guests appearing (coalesced wake-ups, every ``discover_interval`` otherwise), the table's checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from qga_run import started

from hotplugd import Action, BlockEvent, ConfigProblem, Rescan
from hotplugd_guestagent.errors import CommandFailed
from hotplugd_guestagent.fleet import GuestFleet
from hotplugd_guestagent.link import AgentLink
from hotplugd_guestagent.validators import fleet_problems, name_problem

BLOCK = 128 << 20


@dataclass(frozen=True)
class Options:
    timeout: float = 1.0
    online_timeout_per_block: float = 0.1
    poll_interval: float = 3600.0  # no fallback poll in these tests: only wake-ups list a guest
    resize_poll_interval: float = 0.01
    resize_quiet: float = 0.0
    reconnect_interval: float = 1.0
    reconnect_max: float = 30.0
    max_batch: int = 256
    verify: bool = False
    concurrency: int = 1
    discover_interval: float = 3600.0


class MemoryAgent:
    """A guest's agent in memory: its blocks (phys-index -> online) and the requests it was sent."""

    def __init__(self, blocks: dict[int, bool]) -> None:
        self.blocks = blocks
        self.requests: list[str] = []

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        self.requests.append(command)
        if command == "guest-get-memory-blocks":
            return [{"phys-index": p, "online": on, "can-offline": True} for p, on in self.blocks.items()]
        if command == "guest-get-memory-block-info":
            return {"size": BLOCK}
        if command == "guest-get-vcpus":
            return [{"logical-id": 0, "online": True}]
        raise CommandFailed(command, "CommandNotFound", "not in this fake")  # files: none readable

    def abort(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Fleet(GuestFleet[AgentLink]):
    kind = "test"
    member = "guest"

    def __init__(self, options: Options) -> None:
        super().__init__(options, 0)
        self.rediscovered = 0
        self.released: list[str] = []

    async def rediscover(self) -> None:
        self.rediscovered += 1

    async def release(self, link: AgentLink) -> None:
        self.released.append(link.name)


def link(name: str, agent: MemoryAgent, options: Options) -> AgentLink:
    return AgentLink(name, options, agent, kind="test")


async def streaming(fleet: Fleet) -> None:
    """Until the fleet's stream runs its task group and its tasks have started."""
    await until("the stream's task group", lambda: fleet._tasks is not None)
    await anyio.sleep(0)


async def until(what: str, condition: Any) -> None:
    with anyio.move_on_after(10):
        while not condition():
            await anyio.sleep(0.01)
    assert condition(), f"waited 10 s for {what}"


@pytest.mark.asyncio
async def test_a_guest_adopted_at_run_time_is_listed_at_once_and_a_dropped_one_leaves_no_task() -> None:
    options = Options()
    fleet = Fleet(options)
    agent = MemoryAgent({0: True, 8: False, 9: False})
    async with started(fleet) as seen:
        await streaming(fleet)
        vm1 = link("vm1", agent, options)
        fleet.adopt(vm1)
        await until("its blocks", lambda: len([e for e in seen if isinstance(e, BlockEvent)]) >= 4)
        adds = [(e.action, e.index, e.domain) for e in seen if isinstance(e, BlockEvent)]
        assert adds == [(Action.ADD, 0, "vm1"), (Action.ONLINE, 0, "vm1"), (Action.ADD, 8, "vm1"),
                        (Action.ADD, 9, "vm1")]
        assert (await fleet.topology()).domains["vm1"].block_size == BLOCK

        seen.clear()
        await fleet.drop("vm1", reason="test")
        assert "vm1" not in fleet.links and fleet.released == ["vm1"]
        await until("the rescan", lambda: any(isinstance(e, Rescan) for e in seen))
        assert [(e.action, e.index) for e in seen if isinstance(e, BlockEvent)] == [
            (Action.REMOVE, 0), (Action.REMOVE, 8), (Action.REMOVE, 9)]
        assert isinstance(seen[-1], Rescan) and seen[-1].reason == "guest_gone"
        sent = len(agent.requests)
        vm1.wake()
        await anyio.sleep(0.1)
        assert len(agent.requests) == sent  # the dropped guest's poller is gone: nobody lists it


@pytest.mark.asyncio
async def test_the_watch_reads_the_guest_list_again_once_for_a_burst_of_wake_ups_and_on_its_interval() -> None:
    fleet = Fleet(Options())
    async with started(fleet):
        await streaming(fleet)
        assert fleet.rediscovered == 0  # not before its interval (an hour here) or a wake-up
        await until("the watch", lambda: fleet._rediscover_wanted is not None)
        for _ in range(5):
            fleet.want_rediscover()
        await until("one reading", lambda: fleet.rediscovered >= 1)
        await anyio.sleep(0.1)
        assert fleet.rediscovered == 1

    often = Fleet(Options(discover_interval=0.05))
    async with started(often):
        await until("readings on the interval", lambda: often.rediscovered >= 3)


@pytest.mark.asyncio
async def test_a_fleet_whose_guests_never_change_runs_no_watch() -> None:
    class Fixed(Fleet):
        watches_guests = False

    fleet = Fixed(Options(discover_interval=0.01))
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
    assert fleet_problems(Options(), "plugins.x") == []
    assert fleet_problems(Options(), "plugins.x", missing) == [missing]
    short = Options(reconnect_interval=10.0, reconnect_max=5.0)
    assert [(p.key, p.message) for p in fleet_problems(short, "plugins.x", missing)] == [
        ("plugins.x.guest", "no guest configured"), ("plugins.x.reconnect_max", "is shorter than reconnect_interval")]
