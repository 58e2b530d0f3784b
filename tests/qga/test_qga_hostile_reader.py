"""The agent's reply reader against hostile byte streams: each breach is an AgentError with a reason, in bounded memory.

Every stream starts with the handshake's right answer, so what follows is read
as the reply to ``guest-get-vcpus``, or as what the handshake must skip.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable

import pytest
from hostile import SYNC_REPLY, repeated, scripted_client

from hotplugd_guestagent import framing
from hotplugd_guestagent.framing import MAX_DEPTH, MAX_FRAME
from hotplugd_qga.agent import MAX_STALE_REPLIES, AgentError, AgentProtocolError

pytestmark = [pytest.mark.asyncio, pytest.mark.reliability]

REPLY = b'{"return": [{"online": true, "logical-id": 0}]}\n'


async def _read(chunks: Iterable[bytes]) -> object:
    client, _ = scripted_client(chunks)
    return await client.execute("guest-get-vcpus")


async def _breach(chunks: Iterable[bytes]) -> str:
    """The reason the reader gives up on ``chunks``."""
    with pytest.raises(AgentProtocolError) as caught:
        await _read(chunks)
    return caught.value.reason


async def test_deep_nesting_is_a_protocol_error_not_a_recursion_error() -> None:
    assert await _breach([SYNC_REPLY, b"[" * 100_000, b"]" * 100_000]) == "protocol_error"
    assert await _breach([SYNC_REPLY, b'{"return": ' + b"[" * (MAX_DEPTH + 1)]) == "protocol_error"


async def test_an_integer_past_pythons_digit_limit_is_a_protocol_error() -> None:
    assert await _breach([SYNC_REPLY, b'{"return": 1' + b"7" * 5000 + b"}\n"]) == "protocol_error"


async def test_malformed_json_fails_at_once_instead_of_waiting_for_more() -> None:
    # Nothing follows the bad reply: a reader that takes it for "incomplete" waits for the end of the stream.
    assert await _breach([SYNC_REPLY, b'{"return": nope}\n']) == "protocol_error"
    assert await _breach([SYNC_REPLY, b'garbage\n']) == "protocol_error"
    assert await _breach([SYNC_REPLY, b'{"return": "\xc3\x28"}\n']) == "protocol_error"  # invalid UTF-8


async def test_a_reply_over_the_frame_bound_is_oversized() -> None:
    flood = repeated(b'"' + b"x" * 4000 + b'",', MAX_FRAME + (1 << 20))
    assert await _breach([SYNC_REPLY, b'{"return": [', *flood]) == "oversized_reply"


async def test_a_reply_of_too_many_tokens_is_oversized_long_before_its_byte_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "MAX_TOKENS", 1 << 16)  # the real 2 Mi tokens cost 2.4 s of scanning
    client, stream = scripted_client([SYNC_REPLY, b'{"return": [', *repeated(b"[],", MAX_FRAME)])
    with pytest.raises(AgentProtocolError) as caught:
        await client.execute("guest-get-vcpus")
    assert caught.value.reason == "oversized_reply" and "tokens" in str(caught.value)
    assert stream.received < 1 << 20


async def test_a_0xff_flood_is_a_protocol_error() -> None:
    assert await _breach([SYNC_REPLY, *repeated(b"\xff", 4 << 20)]) == "protocol_error"
    assert await _breach([SYNC_REPLY, b'{"return": [1, ', *repeated(b"\xff", 1 << 20)]) == "protocol_error"


async def test_garbage_without_the_marker_is_a_flood_past_the_discard_bound() -> None:
    assert await _breach(repeated(b"x\n", MAX_FRAME + (1 << 20))) == "flood"


async def test_replies_to_ids_never_sent_are_a_flood_and_hold_no_memory() -> None:
    stale = repeated(b'\xff{"return": 4242}\n', 4 << 20)
    tracemalloc.start()
    try:
        assert await _breach([*stale, SYNC_REPLY, REPLY]) == "flood"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


async def test_a_few_stale_sync_replies_are_skipped() -> None:
    stale = b'\xff{"return": 4242}\n' * MAX_STALE_REPLIES
    assert await _read([stale, SYNC_REPLY, REPLY]) == [{"online": True, "logical-id": 0}]


async def test_a_million_tiny_lines_before_a_reply_hold_no_memory() -> None:
    lines = repeated(b"\n", 1_000_000)
    tracemalloc.start()
    try:
        assert await _read([SYNC_REPLY, *lines, REPLY]) == [{"online": True, "logical-id": 0}]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 << 10  # a read or two, not the megabyte of lines


async def test_endless_empty_lines_are_a_flood() -> None:
    assert await _breach([SYNC_REPLY, *repeated(b"\r\n", MAX_FRAME + (1 << 20))]) == "flood"


async def test_a_reply_in_one_byte_pieces_is_read() -> None:
    pieces = [REPLY[i:i + 1] for i in range(len(REPLY))]
    assert await _read([SYNC_REPLY, *pieces]) == [{"online": True, "logical-id": 0}]


async def test_a_breach_drops_the_connection_and_its_buffer() -> None:
    client, _ = scripted_client([SYNC_REPLY, b"[" * 1000])
    with pytest.raises(AgentError):
        await client.execute("guest-get-vcpus")
    assert not client.ready and client._stream is None and not client._buf
