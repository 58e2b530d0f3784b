"""A small synchronous QMP client: memory hot-add (pc-dimm) and virtio-mem resize.

QMP is JSON lines on a unix socket: a greeting, ``qmp_capabilities``, then commands; asynchronous
``event`` messages may arrive between a command and its ``return`` and are kept in :attr:`QMP.events`.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

from .errors import QMPError

GiB = 1024**3


class QMP:
    """A connected QMP session. Use :meth:`connect`; close with :meth:`close` or ``with``."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._dimms = itertools.count()

    @classmethod
    def connect(cls, path: Path, timeout: float = 10) -> QMP:
        """Connect to QEMU's monitor socket, retrying until it exists, and negotiate."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"cannot connect to QMP socket {path}: {exc}") from exc
                time.sleep(0.05)
        sock.settimeout(timeout)
        qmp = cls(sock, path)
        greeting = qmp._read()
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting on {path}: {greeting}")
        qmp.execute("qmp_capabilities")
        return qmp

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as exc:
            raise QMPError(f"reading QMP socket {self.path}: {exc}") from exc
        if not line:
            raise QMPError(f"QMP socket {self.path} closed (QEMU exited?)")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command`` and return its ``return`` value; raise :class:`QMPError` on ``error``."""
        rid = next(self._ids)
        msg: dict[str, Any] = {"execute": command, "id": rid}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"sending {command} to {self.path}: {exc}") from exc
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif reply.get("id") == rid:
                if "error" in reply:
                    err = reply["error"]
                    raise QMPError(f"QMP {command} {arguments}: {err.get('class')}: {err.get('desc')}")
                return reply.get("return")

    def hotplug_dimm(self, size: int = GiB, dimm_id: str | None = None) -> str:
        """Hot-add a ``pc-dimm`` of ``size`` bytes backed by RAM; return its device id."""
        dimm_id = dimm_id or f"dimm{next(self._dimms)}"
        self.execute("object-add", **{"qom-type": "memory-backend-ram", "id": f"{dimm_id}-mem", "size": size})
        self.execute("device_add", driver="pc-dimm", id=dimm_id, memdev=f"{dimm_id}-mem")
        return dimm_id

    def resize_virtio_mem(self, size: int, device: str = "vm0") -> None:
        """Ask the guest to grow or shrink virtio-mem ``device`` to ``size`` bytes."""
        self.execute("qom-set", path=device, property="requested-size", value=size)

    def virtio_mem_size(self, device: str = "vm0") -> int:
        """The memory the guest has actually plugged into ``device``, in bytes."""
        return int(self.execute("qom-get", path=device, property="size"))

    def memory_devices(self) -> list[dict[str, Any]]:
        return list(self.execute("query-memory-devices"))

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<QMP {self.path} events={len(self.events)}>"
