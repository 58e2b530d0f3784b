"""The agent client on the wire: handshake, late replies after a timeout, errors, reconnection."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from qga_fakes import FakeAgent, fake_vms

from hotplugd_guestagent.commands import list_blocks
from hotplugd_qga import AgentClient, AgentTimeout, AgentUnavailable, CommandFailed

pytestmark = pytest.mark.asyncio


def _syncs(agent: FakeAgent) -> list[int]:
    return [r["arguments"]["id"] for r in agent.commands("guest-sync-delimited")]


async def test_first_request_syncs_with_ff_and_a_delimited_sync(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(32, 36))
        client = AgentClient(str(vm.agent.path), timeout=5)
        assert await list_blocks(client) == {32: False, 33: False, 34: False, 35: False}
        assert vm.agent.raw.startswith(b"\xff{")  # 0xFF first, then the sync request
        assert [r["execute"] for r in vm.agent.requests] == ["guest-sync-delimited", "guest-get-memory-blocks"]
        assert client.discarded > 0  # the parse error drawn by the 0xFF was thrown away
        await list_blocks(client)
        assert len(_syncs(vm.agent)) == 1 and client.syncs == 1  # in step: no second handshake
        await client.close()


async def test_a_late_reply_after_a_timeout_is_discarded_by_the_next_sync(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=5)
        vm.agent.add([40])
        await list_blocks(client)
        vm.agent.pause()
        with pytest.raises(AgentTimeout, match="guest-get-memory-block-info"):
            await client.execute("guest-get-memory-block-info", timeout=0.2)
        assert not client.ready
        vm.agent.resume()  # the held request is answered now, late
        # The late {"return": {"size": ...}} must not be taken for this command's reply.
        assert await client.execute("guest-get-vcpus") == [
            {"online": True, "can-offline": False, "logical-id": 0},
            {"online": True, "can-offline": True, "logical-id": 1}]
        assert client.syncs == 2 and len(set(_syncs(vm.agent))) == 2
        await client.close()


async def test_a_stale_sync_reply_is_skipped(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=5)
        vm.agent.pause()  # the very first handshake times out
        with pytest.raises(AgentTimeout):
            await client.execute("guest-get-memory-block-info", timeout=0.2)
        vm.agent.resume()  # its delimited reply (first id) now arrives ahead of the second one
        assert await client.execute("guest-get-memory-block-info") == {"size": 128 << 20}
        first, second = _syncs(vm.agent)
        assert first != second and client.syncs == 1
        await client.close()


async def test_an_error_reply_raises_and_keeps_the_client_in_step(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=5)
        with pytest.raises(CommandFailed) as failed:
            await client.execute("guest-frobnicate")
        assert failed.value.error_class == "CommandNotFound"
        assert client.ready
        await client.execute("guest-get-vcpus")
        assert client.syncs == 1
        await client.close()


async def test_a_missing_socket_is_unavailable(tmp_path: Path) -> None:
    client = AgentClient(str(tmp_path / "nothing.sock"), timeout=1, name="vm9")
    with pytest.raises(AgentUnavailable, match="vm9"):
        await client.execute("guest-get-vcpus")


async def test_reconnects_after_the_socket_closed(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=5)
        await client.execute("guest-get-vcpus")
    # the fake (QEMU) is gone: the next request fails, and cleanly
    with pytest.raises(AgentUnavailable):
        await client.execute("guest-get-vcpus")
    (tmp_path / "vm0-qga.sock").unlink(missing_ok=True)
    (tmp_path / "vm0-qmp.sock").unlink(missing_ok=True)
    async with fake_vms(tmp_path) as [vm]:  # QEMU is back
        assert await client.execute("guest-get-memory-block-info") == {"size": 128 << 20}
        assert vm.agent.connections == 1
        await client.close()


async def test_abort_with_nothing_in_flight_forces_a_handshake(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=5)
        await client.execute("guest-get-vcpus")
        client.abort()  # the agent restarted
        await client.execute("guest-get-vcpus")
        assert len(_syncs(vm.agent)) == 2
        await client.close()


async def test_abort_gives_up_the_request_in_flight_at_once(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        client = AgentClient(str(vm.agent.path), timeout=60)
        await client.execute("guest-get-vcpus")
        vm.agent.pause()  # the agent died holding the request: no reply will ever come
        with anyio.fail_after(5):  # far below the 60 s timeout
            async with anyio.create_task_group() as tg:
                tg.start_soon(_abort_when_sent, client, vm.agent)
                with pytest.raises(AgentUnavailable, match="went away during guest-get-memory-block-info"):
                    await client.execute("guest-get-memory-block-info")
        vm.agent.resume()  # the agent is back: the next request syncs first, and is answered
        assert await client.execute("guest-get-memory-block-info") == {"size": 128 << 20}
        assert client.syncs == 2
        await client.close()


async def _abort_when_sent(client: AgentClient, agent: FakeAgent) -> None:
    while not agent.commands("guest-get-memory-block-info"):
        await anyio.sleep(0.001)
    client.abort()


async def test_requests_are_serialised(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(8))
        client = AgentClient(str(vm.agent.path), timeout=5)
        results: list[object] = []

        async def call(command: str) -> None:
            results.append((command, await client.execute(command)))

        async with anyio.create_task_group() as tg:
            for command in ["guest-get-vcpus", "guest-get-memory-block-info", "guest-get-memory-blocks"] * 3:
                tg.start_soon(call, command)
        assert len(results) == 9
        for command, value in results:  # each reply went to its own request
            if command == "guest-get-vcpus":
                assert isinstance(value, list) and len(value) == 2 and "logical-id" in value[0]
            elif command == "guest-get-memory-block-info":
                assert value == {"size": 128 << 20}
            else:
                assert isinstance(value, list) and len(value) == 8 and "phys-index" in value[0]
        await client.close()
