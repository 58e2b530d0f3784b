"""Bounds: every buffer between the kernel and an onlined block is bounded, and full never means lost.

docs/reliability.md lists each bound, its default and what happens when it is
full. The pending queue's own tests are in tests/core/test_scheduler.py and
the storm tests; here are the others.
"""

from __future__ import annotations

import errno

import anyio
import pytest

from hotplugd import Outcome, Rescan
from hotplugd.model import OnlineResult
from hotplugd.testing import FakeBackend, FakeHost, HookRecorder, running, sample, wait_until
from hotplugd.testing.netns import Forger, in_new_netns
from hotplugd_sysfs.netlink import MAX_BATCH, Datagram, InjectedSource, NetlinkSource, open_uevent_socket
from hotplugd_sysfs.uevent import encode

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio]


async def test_a_netlink_wake_up_takes_at_most_one_batch_and_the_rest_stays_in_the_socket() -> None:
    sock, _, forger = in_new_netns(lambda: (*open_uevent_socket(8 << 20), Forger()))
    port = forger.port
    try:
        for i in range(MAX_BATCH + 100):
            forger.broadcast(encode("add", f"/devices/system/memory/memory{i}", {"SUBSYSTEM": "memory"}))
        source = NetlinkSource(sock)
        with anyio.fail_after(10):
            first = await source.receive()
            second = await source.receive()
    finally:
        forger.close()
        sock.close()
    assert len(first.datagrams) == MAX_BATCH and not first.overflow
    assert len(second.datagrams) == 100 and not second.overflow
    assert {d.sender for d in first.datagrams + second.datagrams} == {port}


async def test_a_full_injected_source_refuses_loudly() -> None:
    """``netlink = false`` (tests, embedding): a feeder faster than the daemon is told, never ignored."""
    source = InjectedSource(buffer=2)
    source.feed(Datagram(b"a"))
    source.feed(Datagram(b"b"))
    with pytest.raises(anyio.WouldBlock):
        source.feed(Datagram(b"c"))
    batch = await source.receive()
    assert [d.data for d in batch.datagrams] == [b"a", b"b"]
    source.feed(Datagram(b"c"))  # room again once read


async def test_a_full_fake_backend_stream_refuses_loudly() -> None:
    backend = FakeBackend(FakeHost(), buffer=1)
    backend.add(1)
    with pytest.raises(anyio.WouldBlock):
        backend.add(2)


async def test_rescan_requests_coalesce_into_one(make_daemon, hotplugd_metrics) -> None:
    """A burst of overflows (or of SIGUSR1) costs one full scan, not one per request."""
    backend = FakeBackend(FakeHost())
    daemon = make_daemon(backend)
    async with running(daemon):
        for _ in range(100):
            daemon.scheduler.request_rescan("overflow")  # no await in between: the loop sees one request
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "overflow"}) >= 1)
        backend.end()
    assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "overflow"}) == 1


async def test_a_failed_block_that_vanished_is_forgotten_at_the_next_rescan(make_daemon, hook_recorder) -> None:
    """The failed set holds only blocks still present and offline: its bound is the host's blocks."""
    host = FakeHost()
    backend = FakeBackend(host)
    host.script(5, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    daemon = make_daemon(backend)
    async with running(daemon):
        backend.add(5, 6)
        await wait_until(lambda: 5 in daemon.scheduler.host.failed and 6 in host.online_indices())
        del host.blocks[5]  # gone, and its remove event lost
        backend.inject(Rescan("overflow"))
        await wait_until(lambda: 5 not in daemon.scheduler.host.failed, what="the failed set pruned")
        backend.end()
    assert [r.block.index for r in hook_recorder.reports if not r.result.outcome.success] == [5]


async def test_a_permanent_failure_is_not_retried_by_an_overflow_rescan(make_daemon) -> None:
    host = FakeHost()
    backend = FakeBackend(host)
    host.script(5, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    recorder = HookRecorder()
    daemon = make_daemon(backend, plugins=[("faults", recorder)])
    async with running(daemon):
        backend.add(5)
        await wait_until(lambda: 5 in daemon.scheduler.host.failed)
        for _ in range(3):
            backend.inject(Rescan("overflow"))
        backend.end()
    assert [c[0] for c in host.calls] == [5]  # one attempt, reported once
    assert [r.block.index for r in recorder.reports] == [5]
