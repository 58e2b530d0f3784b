"""The real NETLINK_KOBJECT_UEVENT socket: it only listens, so binding it here is safe.

A real kernel event is provoked inside a private network namespace (a veth
pair made there): nothing is written under this machine's ``/sys``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

import anyio
import pytest

from hotplugd.testing.netns import add_veth_pairs, in_new_netns
from hotplugd_sysfs.intake import Intake
from hotplugd_sysfs.netlink import KERNEL_GROUP, NETLINK_KOBJECT_UEVENT, Batch, NetlinkSource, open_uevent_socket

pytestmark = pytest.mark.asyncio


def socket_with_kernel_events() -> socket.socket:
    """A uevent socket in a private network namespace where the kernel just announced a new veth pair."""
    def make() -> socket.socket:
        sock, _ = open_uevent_socket(1 << 20)
        add_veth_pairs(1, prefix="hpdtest")
        return sock

    return in_new_netns(make)


async def receive_until(source: NetlinkSource, wanted) -> list:
    """Datagrams received until one matches ``wanted`` (other hosts' events may come first)."""
    seen: list = []
    with anyio.fail_after(5):
        while not any(wanted(d) for d in seen):
            batch = await source.receive()
            seen.extend(batch.datagrams)
    return seen


@pytest.fixture
def uevent_socket():
    sock, _ = open_uevent_socket(1 << 20)
    yield sock
    sock.close()


async def test_socket_is_bound_nonblocking_and_cloexec(uevent_socket):
    assert uevent_socket.proto == NETLINK_KOBJECT_UEVENT
    assert uevent_socket.getsockname()[1] == KERNEL_GROUP
    assert not uevent_socket.getblocking()
    assert fcntl.fcntl(uevent_socket.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert uevent_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20


async def test_receives_a_kernel_event_without_a_thread():
    sock = socket_with_kernel_events()
    source = NetlinkSource(sock)
    seen = await receive_until(source, lambda d: d.data.startswith(b"add@/devices/virtual/net/hpdtest0\0"))
    sock.close()
    kernel = [d for d in seen if d.sender == 0]
    assert any(d.data.startswith(b"add@/devices/virtual/net/hpdtest0\0") for d in kernel)
    intake = Intake()
    assert [intake.decode(d) for d in kernel] == [None] * len(kernel)  # not memory: skipped
    assert intake.dropped == {} and intake.skipped == len(kernel)


async def test_a_userspace_sender_is_seen_and_dropped(uevent_socket):
    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
    forger.bind((0, 0))
    try:
        forger.sendto(b"add@/devices/system/memory/memory9\0ACTION=add\0", (uevent_socket.getsockname()[0], 0))
    except PermissionError:
        pytest.skip("sending on netlink needs CAP_NET_ADMIN")
    finally:
        forger_port = forger.getsockname()[0]
        forger.close()
    seen = await receive_until(NetlinkSource(uevent_socket), lambda d: d.sender != 0)
    forged = [d for d in seen if d.data.startswith(b"add@/devices/system/memory/memory9")]
    assert [d.sender for d in forged] == [forger_port]
    intake = Intake()
    assert intake.decode(forged[0]) is None and intake.dropped == {"not_kernel": 1}


async def test_kernel_drops_surface_as_overflow_then_reading_goes_on():
    def flood_and_drain() -> tuple[Batch, Batch, int]:
        sock, rcvbuf = open_uevent_socket(64 << 10)  # SO_RCVBUFFORCE honours small sizes too
        try:
            source = NetlinkSource(sock)
            add_veth_pairs(40, prefix="flood")  # ~500 kernel events into a 64 KiB buffer
            first = source.drain()
            while source.drain().datagrams:  # what the buffer still holds from before the drop
                pass
            add_veth_pairs(1, prefix="after")
            return first, source.drain(), rcvbuf
        finally:
            sock.close()

    first, later, rcvbuf = in_new_netns(flood_and_drain)
    assert rcvbuf <= 256 << 10
    assert first.overflow
    assert any(d.data.startswith(b"add@/devices/virtual/net/after0") and d.sender == 0 for d in later.datagrams)


async def test_drain_maps_only_enobufs_to_overflow():
    class Failing:
        def __init__(self, code: int) -> None:
            self.code = code

        def recvmsg(self, _size: int):
            raise OSError(self.code, os.strerror(self.code))

        def fileno(self) -> int:
            return -1

    assert NetlinkSource(Failing(errno.ENOBUFS)).drain().overflow
    with pytest.raises(OSError):
        NetlinkSource(Failing(errno.EBADF)).drain()
