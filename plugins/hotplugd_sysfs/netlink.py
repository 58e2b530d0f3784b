"""The kernel's uevent socket (``NETLINK_KOBJECT_UEVENT``), read through anyio without a thread.

The socket is non-blocking and close-on-exec, bound to multicast group 1 (the
kernel's own broadcasts; udevd re-broadcasts on group 2), with a large receive
buffer: ``SO_RCVBUFFORCE`` when the process may exceed ``rmem_max``, else
``SO_RCVBUF``. When that buffer overflows the kernel drops events and the next
receive fails with ENOBUFS: the batch then says ``overflow`` and the backend
asks for a full rescan.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

import anyio

from hotplugd import BackendError

from .uevent import MAX_UEVENT

#: Python's socket module has neither constant.
NETLINK_KOBJECT_UEVENT = 15
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: The kernel's multicast group for its own uevents.
KERNEL_GROUP = 1
#: Datagrams taken per wake-up before yielding to the event loop.
MAX_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Datagram:
    """One received message and who sent it (netlink port id; 0 is the kernel)."""

    data: bytes
    sender: int = 0
    truncated: bool = False


@dataclass(slots=True)
class Batch:
    """Datagrams received in one wake-up; ``overflow`` when the kernel dropped some after them."""

    datagrams: list[Datagram] = field(default_factory=list)
    overflow: bool = False


def open_uevent_socket(rcvbuf: int) -> tuple[socket.socket, int]:
    """A bound uevent socket and its effective receive buffer in bytes. BackendError when impossible."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                             NETLINK_KOBJECT_UEVENT)
    except OSError as exc:
        raise BackendError(f"cannot open a NETLINK_KOBJECT_UEVENT socket: {exc.strerror or exc}",
                           hint="run on a Linux host (not in a network namespace without uevents)") from None
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:  # no CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, KERNEL_GROUP))  # port id 0: the kernel assigns one
    except OSError as exc:
        sock.close()
        raise BackendError(f"cannot bind the uevent socket to group {KERNEL_GROUP}: {exc.strerror or exc}") from None
    return sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


#: A plain int: ``socket.MSG_TRUNC`` is an IntFlag, whose ``&`` is a Python-level call per datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)


class NetlinkSource:
    """Batches of datagrams from a uevent socket; ``receive`` waits with ``anyio.wait_readable``."""

    def __init__(self, sock: socket.socket, bufsize: int = MAX_UEVENT) -> None:
        self.sock = sock
        self.bufsize = bufsize

    def __repr__(self) -> str:
        return f"<NetlinkSource fd={self.sock.fileno()}>"

    async def receive(self) -> Batch | None:
        """Wait for the socket, then drain what is there (at most MAX_BATCH). Never None: it never ends."""
        while True:
            await anyio.wait_readable(self.sock)
            batch = self.drain()
            if batch.datagrams or batch.overflow:
                return batch

    def drain(self) -> Batch:
        """Read without blocking until the socket is empty, ENOBUFS, or MAX_BATCH datagrams."""
        batch = Batch()
        while len(batch.datagrams) < MAX_BATCH:
            try:
                data, _anc, flags, address = self.sock.recvmsg(self.bufsize)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    batch.overflow = True
                    break
                raise
            sender = address[0] if isinstance(address, tuple) and address else -1
            batch.datagrams.append(Datagram(data, sender, bool(flags & _MSG_TRUNC)))
        return batch

    def close(self) -> None:
        self.sock.close()


class InjectedSource:
    """Datagrams a test (or an embedding program) hands in with ``feed``; ``end`` finishes the stream."""

    def __init__(self, buffer: int = 1 << 20) -> None:
        self._send, self._recv = anyio.create_memory_object_stream[Datagram | None](buffer)

    def feed(self, datagram: Datagram) -> None:
        self._send.send_nowait(datagram)

    def overflow(self) -> None:
        """Act as if the kernel had dropped events (ENOBUFS)."""
        self._send.send_nowait(None)

    def end(self) -> None:
        self._send.close()

    async def receive(self) -> Batch | None:
        """The next batch: everything queued now; None once ``end`` was called and all is read."""
        try:
            first = await self._recv.receive()
        except anyio.EndOfStream:
            return None
        batch = Batch()
        item: Datagram | None = first
        while True:
            if item is None:
                batch.overflow = True
                return batch
            batch.datagrams.append(item)
            if len(batch.datagrams) >= MAX_BATCH:
                return batch
            try:
                item = self._recv.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return batch

    def close(self) -> None:
        self._send.close()
        self._recv.close()

