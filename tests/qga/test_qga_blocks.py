"""Block identity across guests, and the events between two listings of a guest's blocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotplugd import Action, State
from hotplugd_qga.blocks import block_index, diff, split_index, to_block

SIZE = 128 << 20


@given(st.integers(0, 4095), st.integers(0, (1 << 32) - 1))
def test_index_round_trips_and_keeps_guests_apart(guest: int, phys: int) -> None:
    index = block_index(guest, phys)
    assert split_index(index) == (guest, phys)
    assert block_index(guest + 1, 0) > index  # one guest's indices never meet the next one's


def test_phys_index_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        block_index(0, 1 << 32)


def test_block_carries_guest_as_node() -> None:
    block = to_block(3, 40, False, SIZE)
    assert (block.node, block.index, block.state, block.valid_zones) == (3, 3 << 32 | 40, State.OFFLINE, ())


def _actions(events: list) -> list[tuple[str, int]]:
    return [(e.action.value, split_index(e.index)[1]) for e in events]


def test_diff_gives_adds_state_changes_and_removes() -> None:
    previous = {0: True, 32: False, 33: False, 34: True}
    current = {0: True, 32: True, 34: True, 40: False, 41: True}
    events = diff(1, SIZE, previous, current)
    assert _actions(events) == [("remove", 33), ("online", 32), ("add", 40), ("add", 41), ("online", 41)]
    adds = [e for e in events if e.action is Action.ADD]
    assert [(e.block.node, e.block.state, e.block.size) for e in adds] == [
        (1, State.OFFLINE, SIZE), (1, State.ONLINE, SIZE)]
    assert not any(e.synthetic for e in events)


def test_diff_of_the_same_listing_is_empty_unless_replayed() -> None:
    listing = {0: True, 32: False, 33: False}
    assert diff(0, SIZE, listing, dict(listing)) == []
    replayed = diff(0, SIZE, listing, dict(listing), replay=True)
    assert _actions(replayed) == [("add", 32), ("add", 33)]  # only offline blocks come back
    assert all(e.synthetic for e in replayed)
