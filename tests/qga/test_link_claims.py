"""The claims a guest's agent made (``success`` for blocks it onlined) are checked only against a listing asked for
after them: a listing read before a batch, whose poll was still reading MemAvailable when the batch succeeded, shows
those blocks offline and is no evidence of a lie (tests/vm/test_qga.py marked a healthy guest down so, under load)."""

from __future__ import annotations

import anyio
import pytest
from qga_fakes import AgentOptions, MemoryAgent
from structlog.testing import capture_logs

from hotplugd import Action, Outcome
from hotplugd.testing import ManualClock, wait_until
from hotplugd_guestagent.link import AgentLink

pytestmark = pytest.mark.asyncio


async def test_a_batch_that_succeeds_while_a_listing_is_being_finished_is_not_taken_for_a_lie() -> None:
    agent = MemoryAgent({0: True, 8: False})
    clock = ManualClock()
    link = AgentLink("vm1", AgentOptions(), agent, clock, kind="test")
    await link.scan()  # described and listed: 8 offline
    clock.advance(2.0)  # MemAvailable due again (MEMINFO_MAX_AGE): the next poll reads it after its listing
    agent.gate = anyio.Event()
    agent.requests.clear()
    events: list = []
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            async def poll() -> None:
                events.extend(await link.refresh())

            tg.start_soon(poll)
            await wait_until(lambda: agent.requests == ["guest-get-memory-blocks", "guest-file-open"],
                             what="the poll listed the blocks (8 offline) and reads MemAvailable")
            assert [r.outcome for r in await link.online_many([8])] == [Outcome.ONLINED]
            agent.gate.set()
    assert events == [] and link.healthy and link.down_reason is None
    assert not [e for e in logs if e["event"].endswith(("false_success", "agent_down"))]

    agent.gate = None
    assert [(e.action, e.index) for e in await link.refresh()] == [(Action.ONLINE, 8)]  # this listing confirms it
    assert link.healthy

    agent.blocks[9] = False  # and a lie is still caught by the next listing
    assert [(e.action, e.index) for e in await link.refresh()] == [(Action.ADD, 9)]
    assert [r.outcome for r in await link.online_many([9])] == [Outcome.ONLINED]
    agent.blocks[9] = False  # it said success and did nothing
    assert [(e.action, e.index) for e in await link.refresh()] == [(Action.OFFLINE, 9)]
    assert link.down_reason == "false_success"
