"""Hostile uevents: fuzzed datagrams through the intake, the sysfs backend's stream and the daemon.

``tests/sysfs/test_uevent.py`` fuzzes the parser itself; here the whole path
from a datagram to a block event must hold: nothing raises, every datagram is
accounted for (an event, a counted drop, or a skipped other-device event), and
only the kernel's own ``add`` of a present offline block gets onlined.
``bench/fuzz_uevents.py`` runs the same properties under atheris for millions of inputs.
"""

from __future__ import annotations

import functools
import random

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotplugd import Action, BlockEvent, Rescan
from hotplugd.testing import HookRecorder
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.intake import Intake
from hotplugd_sysfs.netlink import Datagram
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs
from hotplugd_sysfs.uevent import MAX_UEVENT, encode

from .sysfs_tree import FakeTreeSysfs, daemon_on

pytestmark = pytest.mark.reliability

ACTIONS = ["add", "remove", "online", "offline", "change", "move", "bind", "", "ADD", "add\0"]
OFFLINE = range(8, 16)  # present and offline in the tree; 0-7 are online


def memory_uevent(action: str, index: object, extra: dict[str, str]) -> bytes:
    return encode(action, f"/devices/system/memory/memory{index}", {"SUBSYSTEM": "memory", **extra})


_text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
_payloads = st.one_of(
    st.binary(max_size=MAX_UEVENT + 16),  # anything at all
    st.builds(memory_uevent, st.sampled_from(ACTIONS),  # well formed, odd values
              st.one_of(st.integers(-5, 40), st.sampled_from(["", "x", "1/power", "99999999999", "٣"])),
              st.dictionaries(st.sampled_from(["SEQNUM", "SYNTH_UUID", "SUBSYSTEM", "ACTION", "DEVPATH", "X"]),
                              _text, max_size=3)),
    st.builds(lambda d, cut, noise: d[:cut] + noise + d[cut:],  # a real one, damaged
              st.builds(memory_uevent, st.sampled_from(ACTIONS[:4]), st.integers(0, 20), st.just({})),
              st.integers(0, 64), st.binary(max_size=16)),
)
datagrams = st.builds(Datagram, _payloads, st.sampled_from([0, 0, 0, 1, 4242, -1]), st.booleans())


@given(st.lists(datagrams, max_size=40))
@settings(max_examples=500)
def test_every_datagram_is_an_event_a_counted_drop_or_skipped(batch: list[Datagram]) -> None:
    intake = Intake()
    events = [e for e in map(intake.decode, batch) if e is not None]
    assert len(events) + sum(intake.dropped.values()) + intake.skipped == len(batch)
    kernel = [d for d in batch if d.sender == 0 and not d.truncated]
    assert len(events) <= len(kernel)
    assert intake.dropped["not_kernel"] == sum(1 for d in batch if d.sender != 0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FakeSysfs:
    fake = FakeSysfs(tmp_path_factory.mktemp("hostile"))
    fake.add_blocks(range(0, 8), state="online", zones=("Normal",))
    fake.add_blocks(OFFLINE)
    return fake


async def stream(backend: SysfsBackend, batch: list[Datagram]) -> list[BlockEvent | Rescan]:
    await backend.start()
    for d in batch:
        backend.feed(d.data, d.sender, d.truncated)
    backend.end()
    return [event async for event in backend.events()]


@given(st.lists(datagrams, max_size=40))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_the_backend_stream_never_raises_and_adds_only_present_blocks(tree: FakeSysfs, batch: list[Datagram]) -> None:
    backend = SysfsBackend.from_options(tree.options(), io=tree.io)
    events = anyio.run(stream, backend, batch)
    assert len(events) + sum(backend.intake.dropped.values()) + backend.intake.skipped <= len(batch)
    for event in events:
        assert isinstance(event, BlockEvent)
        if event.action is Action.ADD:
            assert event.block is not None and event.block.index == event.index
            assert event.index in set(tree.indices())
        else:
            assert event.block is None


@pytest.mark.asyncio
async def test_the_daemon_onlines_only_what_the_kernel_added_amid_garbage(fake_sysfs: FakeSysfs) -> None:
    rng = random.Random(7)
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))
    fake_sysfs.add_blocks(range(8, 16))  # offline, present at start: coldplug takes them
    recorder = HookRecorder()
    provider = FakeTreeSysfs(fake_sysfs)
    daemon = daemon_on(provider, recorder, netlink=False)
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))) for _ in range(2000)]
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            backend = daemon.backend
            real = fake_sysfs.hot_add(range(64, 72))  # hot-added now: only their events tell of them
            fake_sysfs.add_blocks(range(100, 110))  # present and offline, but only a forger "announces" them
            forged = [fake_sysfs.uevent("add", i) for i in range(100, 110)]
            for data in junk[:1000]:
                backend.feed(data)
            for data in forged:
                backend.feed(data, sender=31337)
            for data in real:
                backend.feed(data)
            for data in junk[1000:]:
                backend.feed(data, sender=rng.choice([0, 5]), truncated=rng.random() < 0.1)
            backend.end()
    assert fake_sysfs.online_indices() == set(range(0, 16)) | set(range(64, 72))
    assert sorted(r.block.index for r in recorder.reports) == [*range(8, 16), *range(64, 72)]
    assert backend.dropped_counts()["not_kernel"] >= len(forged)
    assert sum(backend.dropped_counts().values()) + backend.intake.skipped == len(junk) + len(forged)
