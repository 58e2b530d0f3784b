"""A guest's blocks in the core's model (domain = guest, index = phys-index, node 0), and the
events between two listings of a guest's blocks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hotplugd import Action, State
from hotplugd_guestagent.blocks import diff, removals, to_block

SIZE = 128 << 20


def test_a_block_is_its_phys_index_in_the_guests_domain_on_node_0() -> None:
    block = to_block("vm3", 40, False, SIZE)
    assert (block.domain, block.index, block.node, block.state, block.valid_zones) == (
        "vm3", 40, 0, State.OFFLINE, ())


def _actions(events: list) -> list[tuple[str, int]]:
    return [(e.action.value, e.index) for e in events]


def test_diff_gives_adds_state_changes_and_removes_of_the_guests_domain() -> None:
    previous = {0: True, 32: False, 33: False, 34: True}
    current = {0: True, 32: True, 34: True, 40: False, 41: True}
    events = diff("vm1", SIZE, previous, current)
    assert _actions(events) == [("remove", 33), ("online", 32), ("add", 40), ("add", 41), ("online", 41)]
    assert {e.domain for e in events} == {"vm1"}
    adds = [e for e in events if e.action is Action.ADD]
    assert [(e.block.domain, e.block.state, e.block.size) for e in adds] == [
        ("vm1", State.OFFLINE, SIZE), ("vm1", State.ONLINE, SIZE)]
    assert not any(e.synthetic for e in events)
    assert [e.more for e in adds] == [True, False]  # sent back to back: one phase for both


def test_diff_of_the_same_listing_is_empty_unless_replayed() -> None:
    listing = {0: True, 32: False, 33: False}
    assert diff("vm0", SIZE, listing, dict(listing)) == []
    replayed = diff("vm0", SIZE, listing, dict(listing), replay=True)
    assert _actions(replayed) == [("add", 32), ("add", 33)]  # only offline blocks come back
    assert all(e.synthetic and e.domain == "vm0" for e in replayed)


@given(st.dictionaries(st.integers(0, 1 << 20), st.booleans(), max_size=30),
       st.dictionaries(st.integers(0, 1 << 20), st.booleans(), max_size=30))
def test_applying_the_diff_to_the_previous_listing_gives_the_current_one(previous: dict, current: dict) -> None:
    state = dict(previous)
    for event in diff("g", SIZE, previous, current):
        if event.action is Action.REMOVE:
            del state[event.index]
        elif event.action is Action.ADD:
            state[event.index] = event.block.state is State.ONLINE
        else:
            state[event.index] = event.action is Action.ONLINE
    assert state == current


def test_a_guest_that_went_away_removes_every_block() -> None:
    assert [(e.action, e.index, e.domain) for e in removals("vm2", {33: False, 1: True})] == [
        (Action.REMOVE, 1, "vm2"), (Action.REMOVE, 33, "vm2")]
    assert removals("vm2", None) == []
