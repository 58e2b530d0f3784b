"""Framing of the agent's replies: a JSON value may arrive in pieces, a character split in two."""

from __future__ import annotations

import pytest

from hotplugd_guestagent.framing import take_object


@pytest.mark.parametrize("chunks, expected", [
    ([b'{"return": 1}'], {"return": 1}),
    ([b'  \n{"return": ', b'[1, 2]}\n'], {"return": [1, 2]}),
    (['{"return": "caf\u00e9"}'.encode()[:-4], '{"return": "caf\u00e9"}'.encode()[-4:]], {"return": "caf\u00e9"}),
])
def test_take_object_waits_for_a_whole_value(chunks: list[bytes], expected: object) -> None:
    buf = bytearray()
    for chunk in chunks[:-1]:
        buf += chunk
        assert take_object(buf) is None
    buf += chunks[-1] + b'{"next"'
    assert take_object(buf) == expected
    assert bytes(buf).lstrip() == b'{"next"'


def test_take_object_on_whitespace_only_needs_more() -> None:
    buf = bytearray(b" \n ")
    assert take_object(buf) is None
