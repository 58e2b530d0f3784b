"""From datagrams to memory events: sender checks, triage, drop counting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hotplugd import Action
from hotplugd_sysfs.intake import Intake, MemoryUEvent
from hotplugd_sysfs.netlink import Datagram
from hotplugd_sysfs.uevent import MAX_UEVENT, encode


def mem(action: str, index: int, **env: str) -> bytes:
    return encode(action, f"/devices/system/memory/memory{index}", {"SUBSYSTEM": "memory", **env})


def test_real_captures_decode_in_order(captures):
    intake = Intake()
    decoded = [intake.decode(Datagram(c.data, c.sender_pid)) for c in captures]
    assert all(isinstance(d, MemoryUEvent) for d in decoded)
    assert decoded[0] == MemoryUEvent(Action.ADD, 64, False, 666)
    assert [d.action for d in decoded].count(Action.REMOVE) == 8
    assert intake.dropped == {}


def test_only_the_kernel_is_believed(captures):
    intake = Intake()
    forged = Datagram(captures[0].data, sender=4242)  # a userspace process's port id
    assert intake.decode(forged) is None
    assert intake.dropped == {"not_kernel": 1}


def test_oversized_and_truncated_are_dropped():
    intake = Intake()
    assert intake.decode(Datagram(mem("add", 1), 0, truncated=True)) is None
    assert intake.decode(Datagram(mem("add", 1, PAD="x" * MAX_UEVENT), 0)) is None
    assert intake.dropped == {"oversized": 2}


def test_malformed_is_counted_not_raised():
    intake = Intake()
    assert intake.decode(Datagram(b"\x00\xff garbage", 0)) is None
    assert intake.decode(Datagram(b"add@/devices/system/memory/memory1\0BROKEN\0", 0)) is None
    assert intake.decode(Datagram(mem("add", 1)[:-1], 0)) is None
    assert intake.dropped == {"malformed": 3}


def test_other_subsystems_and_actions_are_skipped_not_dropped():
    intake = Intake()
    assert intake.decode(Datagram(encode("change", "/devices/virtual/net/lo", {"SUBSYSTEM": "net"}), 0)) is None
    assert intake.decode(Datagram(mem("change", 3), 0)) is None
    assert intake.dropped == {} and intake.skipped == 2


def test_synthetic_flag_is_kept():
    intake = Intake()
    event = intake.decode(Datagram(mem("add", 7, SYNTH_UUID="0"), 0))
    assert event == MemoryUEvent(Action.ADD, 7, synthetic=True)


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=2**32 - 1), st.booleans())
def test_decode_never_raises(data, sender, truncated):
    intake = Intake()
    result = intake.decode(Datagram(data, sender, truncated))
    assert result is None or isinstance(result, MemoryUEvent)
    assert sum(intake.dropped.values()) + intake.skipped + (result is not None) == 1
