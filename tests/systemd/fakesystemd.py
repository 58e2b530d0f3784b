"""What systemd gives a service, done by hand: a notify socket, passed sockets, a real daemon process.

:class:`NotifyListener` is a real unix datagram socket used as ``$NOTIFY_SOCKET``;
:class:`DaemonProcess` runs ``<venv>/bin/hotplugd run`` as a subprocess with the
``LISTEN_FDS`` protocol (the sockets at fd 3 onwards, ``LISTEN_PID`` set to the
daemon's own pid by an ``exec`` wrapper) and its JSON log on stderr.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOTPLUGD = Path(sys.executable).with_name("hotplugd")
WAIT = 30.0


@dataclass(frozen=True)
class Notification:
    """One datagram: its fields (a repeated key keeps the last value) and when it arrived."""

    fields: dict[str, str]
    at: float

    @classmethod
    def parse(cls, data: bytes, at: float) -> Notification:
        pairs = (line.partition("=") for line in data.decode().split("\n") if line)
        return cls({k: v for k, _, v in pairs}, at)


class NotifyListener:
    """A bound ``SOCK_DGRAM`` unix socket at ``path`` (or abstract when ``abstract``); collects datagrams."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.received: list[Notification] = []

    def poll(self, timeout: float = 0.0) -> list[Notification]:
        """Read every datagram waiting (waiting up to ``timeout`` for the first); return the new ones."""
        new: list[Notification] = []
        while select.select([self.sock], [], [], timeout if not new else 0)[0]:
            new.append(Notification.parse(self.sock.recv(65536), time.monotonic()))
        self.received.extend(new)
        return new

    def wait_for(self, predicate: Callable[[Notification], bool], timeout: float = WAIT,
                 since: int = 0) -> Notification:
        """The first notification from index ``since`` on that matches ``predicate``."""
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for note in self.received[checked:]:
                if predicate(note):
                    return note
            checked = max(checked, len(self.received))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching notification in {timeout} s; got {self.received[since:][-10:]}")
            self.poll(min(left, 0.2))

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """``hotplugd run ARGS`` in a subprocess; stderr (JSON lines) is collected by a thread."""

    def __init__(self, args: Sequence[str], env: dict[str, str], listen: Sequence[socket.socket] = ()) -> None:
        # Out of the way of 3, 4, ... first (fds above 100), then moved there by the shell.
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 100) for s in listen]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        full_env.update(env)
        if high:
            full_env["LISTEN_FDS"] = str(len(high))
        moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(high))
        # `exec` keeps the shell's pid, so $$ is the daemon's pid, as systemd sets LISTEN_PID.
        wrapper = f'exec {moves}; LISTEN_PID=$$; export LISTEN_PID; exec "$@"' if high else 'exec "$@"'
        try:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", wrapper, "bash", str(HOTPLUGD), "run", *args],
                env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=high,
            )
        finally:
            for fd in high:
                os.close(fd)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> Iterator[dict[str, Any]]:
        """The structured log lines so far (other lines are skipped)."""
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.events() if r.get("event") == event]

    def wait_logged(self, event: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (found := self.logged(event)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} in the log (exit {self.proc.poll()}):\n" + self.output())
            time.sleep(0.02)
        return found[0]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._reader.join(5)

