"""A private network namespace for uevent sockets: tests flood one, or make the kernel raise events,
without touching the host.

Netlink broadcasts stay inside their network namespace: datagrams a test sends
to the uevent group of a fresh namespace reach only the sockets made there (no
udevd, no other listener of this machine), and no kernel event is provoked.
Namespaces belong to threads: a short-lived thread unshares, makes the
sockets, and ends; the sockets stay in the namespace and work from any thread.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

#: The kernel's uevent netlink protocol and its multicast group (Python's socket module has no constant).
NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def in_new_netns(make: Callable[[], T]) -> T:
    """``make()`` run in a thread that first moved to a new network namespace; skips without CAP_SYS_ADMIN."""
    outcome: dict[str, object] = {}

    def thread() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            outcome["error"] = OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
            return
        try:
            outcome["value"] = make()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=thread, name="netns")
    worker.start()
    worker.join()
    error = outcome.get("error")
    if isinstance(error, PermissionError):
        pytest.skip(f"a private network namespace needs CAP_SYS_ADMIN: {error}")
    if isinstance(error, BaseException):
        raise error
    return outcome["value"]  # type: ignore[return-value]


class Forger:
    """A userspace uevent sender in the same namespace: what it sends has its (non-zero) port id."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
        self.sock.bind((0, 0))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[0]

    def broadcast(self, data: bytes) -> None:
        """To every listener of the kernel's uevent group, as the kernel itself would send."""
        self.sock.sendto(data, (0, KERNEL_GROUP))

    def close(self) -> None:
        self.sock.close()


def add_veth_pairs(count: int = 1, prefix: str = "hpd") -> None:
    """Make the kernel raise real uevents (``add@/devices/virtual/net/...``) in the current thread's namespace.

    Call it inside :func:`in_new_netns`: the pairs live and die with that private namespace.
    Each pair raises about a dozen events (the devices and their queues).
    """
    import subprocess

    script = "".join(f"link add {prefix}{i} type veth peer name {prefix}{i}p\n" for i in range(count))
    result = subprocess.run(["ip", "-batch", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot add veth pairs in a private namespace: {result.stderr.strip()}")
