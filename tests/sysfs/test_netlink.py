"""The real NETLINK_KOBJECT_UEVENT socket: it only listens, so binding it here is safe.

A kernel event is provoked by asking the loopback interface to re-announce
itself (``change`` to ``/sys/devices/virtual/net/lo/uevent``): harmless, and
nowhere near ``/sys/devices/system/memory``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

import anyio
import pytest

from hotplugd_sysfs.intake import Intake
from hotplugd_sysfs.netlink import KERNEL_GROUP, NETLINK_KOBJECT_UEVENT, NetlinkSource, open_uevent_socket

LO_UEVENT = Path("/sys/devices/virtual/net/lo/uevent")
pytestmark = pytest.mark.asyncio


def provoke_kernel_uevent(times: int = 1) -> None:
    if not os.access(LO_UEVENT, os.W_OK):
        pytest.skip(f"cannot write {LO_UEVENT} (not root?)")
    for _ in range(times):
        with open(LO_UEVENT, "w") as fh:
            fh.write("change")


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


async def test_receives_a_kernel_event_without_a_thread(uevent_socket):
    source = NetlinkSource(uevent_socket)
    provoke_kernel_uevent()
    seen = await receive_until(source, lambda d: d.data.startswith(b"change@/devices/virtual/net/lo\0"))
    kernel = [d for d in seen if d.sender == 0]
    assert any(d.data.startswith(b"change@/devices/virtual/net/lo\0") for d in kernel)
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
    sock, rcvbuf = open_uevent_socket(64 << 10)  # SO_RCVBUFFORCE honours small sizes too
    try:
        source = NetlinkSource(sock)
        provoke_kernel_uevent(times=max(200, rcvbuf // 256))
        first = source.drain()
        assert first.overflow
        provoke_kernel_uevent()
        with anyio.fail_after(5):
            later = await source.receive()
            while not later.datagrams:
                later = await source.receive()
        assert later.datagrams
    finally:
        sock.close()


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
