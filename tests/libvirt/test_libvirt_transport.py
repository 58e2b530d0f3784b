"""The agent through libvirt: replies bounded and unwrapped like qga's, libvirt's errors as the agent's."""

from __future__ import annotations

import json

import pytest

from hotplugd_guestagent.errors import AgentProtocolError, AgentTimeout, AgentUnavailable, CommandFailed
from hotplugd_guestagent.framing import MAX_DEPTH
from hotplugd_libvirt.hypervisor import AgentNotConnected, ConnectionLost
from hotplugd_libvirt.transport import LibvirtAgent, decode_reply


def agent_answering(*replies: str | Exception) -> tuple[LibvirtAgent, list[tuple[str, str, int]]]:
    calls: list[tuple[str, str, int]] = []
    queue = list(replies)

    async def call(domain: str, command: str, seconds: int) -> str:
        calls.append((domain, command, seconds))
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return LibvirtAgent("vm1", call, timeout=5.0), calls


@pytest.mark.asyncio
async def test_a_request_is_the_agents_json_with_whole_seconds() -> None:
    agent, calls = agent_answering('{"return": {"size": 134217728}}')
    assert await agent.execute("guest-get-memory-block-info", timeout=2.3) == {"size": 134217728}
    assert calls == [("vm1", json.dumps({"execute": "guest-get-memory-block-info"}), 3)]


@pytest.mark.asyncio
@pytest.mark.parametrize(("reply", "error", "reason"), [
    ('{"return": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", AgentProtocolError, "protocol_error"),
    ('{"return": 1} {"return": 2}', AgentProtocolError, "protocol_error"),  # not one reply
    ('"a string"', AgentProtocolError, "protocol_error"),
    ('{"no": "return"}', AgentProtocolError, "protocol_error"),
    ('{"return": 1', AgentProtocolError, "protocol_error"),  # cut short
    ('{"error": {"class": "CommandNotFound", "desc": "no"}}', CommandFailed, None),
])
async def test_hostile_or_failed_replies(reply: str, error: type[Exception], reason: str | None) -> None:
    agent, _ = agent_answering(reply)
    with pytest.raises(error) as raised:
        await agent.execute("guest-get-memory-blocks")
    if reason:
        assert raised.value.reason == reason  # type: ignore[attr-defined]


def test_an_oversized_reply_is_refused_before_decoding() -> None:
    with pytest.raises(AgentProtocolError) as raised:
        decode_reply('{"return": "' + "x" * (17 << 20) + '"}', "vm1")
    assert raised.value.reason == "oversized_reply"


@pytest.mark.asyncio
async def test_a_lost_connection_is_the_agent_unavailable() -> None:
    agent, _ = agent_answering(ConnectionLost("libvirt: client socket is closed"))
    with pytest.raises(AgentUnavailable):
        await agent.execute("guest-get-memory-blocks")


def test_libvirt_errors_map_to_the_agents() -> None:
    libvirt = pytest.importorskip("libvirt")
    pytest.importorskip("libvirt_qemu")  # libvirt_api imports both: scripts/provision-libvirt builds them
    from hotplugd_libvirt.libvirt_api import agent_error

    def error(code: int, message: str) -> object:
        exc = libvirt.libvirtError(message)
        exc.err = (code, 10, message, 2, None, None, None, 0, 0)
        return exc

    cases = [
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent is not responding: QEMU guest agent is not connected",
         AgentNotConnected),
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent is not responding: Guest agent not available for now",
         AgentTimeout),
        (libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", AgentUnavailable),
        (libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running", AgentUnavailable),
        (libvirt.VIR_ERR_INTERNAL_ERROR, "unable to execute QEMU agent command 'guest-x': blocked", CommandFailed),
        (libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: client socket is closed", ConnectionLost),
        (libvirt.VIR_ERR_SYSTEM_ERROR, "Cannot write data: Broken pipe", ConnectionLost),
    ]
    for code, message, kind in cases:
        assert type(agent_error("guest-x", error(code, message), "vm1")) is kind, message
