"""The uevent parser on the kernel's real bytes and on fuzzed input."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from hotplugd_sysfs.uevent import MAX_UEVENT, UEvent, encode, memory_header, parse


def test_real_captures_parse_to_memory_events(captures):
    events = [parse(c.data) for c in captures]
    assert all(isinstance(e, UEvent) for e in events)
    assert Counter(e.action for e in events) == {"add": 16, "online": 16, "offline": 10, "remove": 8}
    adds = [e.memory_index for e in events if e.action == "add"]
    assert adds == [*range(64, 72), *range(32, 40)]
    assert all(e.subsystem == "memory" and not e.synthetic for e in events)
    seqnums = [e.seqnum for e in events]
    assert seqnums == sorted(seqnums) and len(set(seqnums)) == len(seqnums)


def test_real_captures_come_from_the_kernel_on_group_1(captures):
    assert {(c.sender_pid, c.groups) for c in captures} == {(0, 1)}
    assert all(memory_header(c.data) is True for c in captures)


def test_encode_matches_the_kernels_bytes(captures):
    first = parse(captures[0].data)
    rebuilt = encode(first.action, first.devpath, {"SUBSYSTEM": "memory", "SEQNUM": str(first.seqnum)})
    assert rebuilt == captures[0].data


def test_triage_skips_other_devices_by_header():
    net = encode("change", "/devices/virtual/net/lo", {"SUBSYSTEM": "net", "INTERFACE": "lo"})
    assert memory_header(net) is False
    cpu = encode("online", "/devices/system/cpu/cpu3", {"SUBSYSTEM": "cpu"})
    assert memory_header(cpu) is False
    assert memory_header(b"no header here") is None
    assert memory_header(b"@/devices/system/memory/memory1\0") is None  # no action
    assert memory_header(b"add@\0") is None  # no devpath


def test_synthetic_events_are_marked():
    data = encode("add", "/devices/system/memory/memory5",
                  {"SUBSYSTEM": "memory", "SYNTH_UUID": "0", "SEQNUM": "9"})
    event = parse(data)
    assert event.synthetic and event.memory_index == 5


def test_malformed_messages_are_none():
    good = encode("add", "/devices/system/memory/memory5", {"SUBSYSTEM": "memory"})
    assert parse(good) is not None
    assert parse(good[:-1]) is None  # no terminating NUL
    assert parse(b"add@/devices/system/memory/memory5\0SUBSYSTEM\0") is None  # no '='
    assert parse(b"add@/devices/system/memory/memory5\0=memory\0") is None  # empty key
    assert parse(b"addnoat\0ACTION=add\0") is None
    assert parse(b"add@/devices/system/memory/memory5\0ACTION=remove\0") is None  # contradicts header
    assert parse(b"add@/devices/system/memory/memory5\0DEVPATH=/other\0") is None
    assert parse(b"add@relative\0") is None
    assert parse(b"") is None
    assert parse(good + b"X=" + b"y" * MAX_UEVENT + b"\0") is None  # oversized


def test_memory_index_only_for_block_devpaths():
    assert parse(encode("add", "/devices/system/memory/memory12", {})).memory_index == 12
    assert parse(encode("add", "/devices/system/memory/memory12/power", {})).memory_index is None
    assert parse(encode("add", "/devices/system/memory/memoryX", {})).memory_index is None
    assert parse(encode("add", "/devices/system/memory/memory1", {"SUBSYSTEM": "cpu"})).memory_index is None


@settings(max_examples=2000)
@given(st.binary(max_size=MAX_UEVENT + 64))
def test_parse_and_triage_never_raise_on_any_bytes(data):
    event = parse(data)
    assert event is None or isinstance(event, UEvent)
    assert memory_header(data) in (True, False, None)


_token = st.text(st.characters(codec="ascii", exclude_characters="\0=@", min_codepoint=33), min_size=1, max_size=20)


@given(
    action=st.sampled_from(["add", "remove", "online", "offline", "change", "move", "bind"]),
    devpath=st.builds(lambda parts: "/" + "/".join(parts), st.lists(_token, min_size=1, max_size=6)),
    env=st.dictionaries(_token.filter(lambda k: k not in ("ACTION", "DEVPATH")),
                        st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40), max_size=8),
)
def test_well_formed_events_round_trip(action, devpath, env):
    event = parse(encode(action, devpath, env))
    assert event is not None
    assert (event.action, event.devpath) == (action, devpath)
    assert {k: v for k, v in event.env.items() if k not in ("ACTION", "DEVPATH")} == env


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=200))
def test_mutated_real_messages_never_raise(noise, where):
    base = encode("add", "/devices/system/memory/memory64", {"SUBSYSTEM": "memory", "SEQNUM": "666"})
    mutated = base[:where] + noise + base[where:]
    event = parse(mutated)
    assert event is None or isinstance(event, UEvent)
