"""Metrics on the socket systemd hands over (``LISTEN_FDS``), on a real daemon process.

The socket is made here, moved to fd 3 and announced with ``LISTEN_FDS=1`` and
``LISTEN_PID`` = the daemon's pid, exactly as systemd's socket activation does.
"""

from __future__ import annotations

import errno
import http.client
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotplugd.config import MetricsConfig
from hotplugd.errors import EXIT_CONFIG
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.server import serve_socket

from .daemonconfig import HOLD, free_port, write_config
from .fakesystemd import DaemonProcess, NotifyListener


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify")
    yield listener
    listener.close()


@pytest.fixture
def procs() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for proc in started:
        proc.close()


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def ready(note) -> bool:
    return note.fields.get("READY") == "1"


def test_metrics_are_served_on_the_handed_socket_and_no_port_is_bound(tmp_path, notify, procs) -> None:
    own_port = free_port()  # what the config asks for; must stay unused under socket activation
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host, port = listener.getsockname()
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=own_port)
    procs.append(daemon := DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address},
                                         listen=[listener]))
    listener.close()  # the daemon holds its own copy, as it would systemd's
    notify.wait_for(ready)
    text = scrape(host, port)
    assert "hotplugd_pending_blocks 8.0" in text
    assert daemon.wait_logged("ready")["metrics"] == [host, port]
    with pytest.raises(urllib.error.URLError):
        scrape("127.0.0.1", own_port)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_unix_stream_socket_works_too(tmp_path, notify, procs) -> None:
    path = str(tmp_path / "metrics.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=free_port())
    procs.append(daemon := DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address},
                                         listen=[listener]))
    listener.close()
    notify.wait_for(ready)
    conn = UnixHTTPConnection(path)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    assert "hotplugd_pending_blocks 8.0" in response.read().decode()
    conn.close()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_datagram_socket_is_a_deployment_error_exit_78(tmp_path, notify, procs) -> None:
    wrong = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wrong.bind(("127.0.0.1", 0))
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=free_port())
    procs.append(daemon := DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address},
                                         listen=[wrong]))
    wrong.close()
    assert daemon.wait() == EXIT_CONFIG
    assert "ListenStream=" in daemon.output()


def test_outside_systemd_it_binds_its_own_port(tmp_path, notify, procs) -> None:
    port = free_port()
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=port)
    # LISTEN_PID names another process: the sockets are not for this one (sd_listen_fds' rule).
    procs.append(daemon := DaemonProcess(["--config", str(config)],
                                         {"NOTIFY_SOCKET": notify.address, "LISTEN_PID": "1", "LISTEN_FDS": "1"}))
    notify.wait_for(ready)
    assert "hotplugd_pending_blocks 8.0" in scrape("127.0.0.1", port)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_busy_port_outside_systemd_is_one_line_not_a_traceback(tmp_path, notify, procs) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=busy.getsockname()[1])
    procs.append(daemon := DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address}))
    assert daemon.wait() == 1
    busy.close()
    assert "cannot serve metrics on 127.0.0.1" in daemon.output()
    assert "Traceback" not in daemon.output()


def test_serving_a_handed_socket_opens_no_socket_of_its_own(monkeypatch) -> None:
    """Under RestrictAddressFamilies=AF_UNIX AF_NETLINK, socket(AF_INET) fails; the handed AF_INET socket works."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    real = socket.socket

    class Restricted(real):  # type: ignore[misc,valid-type]
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
            if fileno is None and family != socket.AF_UNIX:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol (seccomp)")
            super().__init__(family, type, proto, fileno)

    metrics = Metrics()
    with monkeypatch.context() as patch:
        patch.setattr(socket, "socket", Restricted)
        server = serve_socket(listener, metrics.registry)
    try:
        assert "hotplugd_failed_blocks 0.0" in scrape(*server.address)
    finally:
        server.close()


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def test_the_handed_socket_is_served_within_the_same_bounds(tmp_path, notify, procs) -> None:
    """300 half-sent requests on the socket systemd hands over: no thread for any, a scrape still answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)  # hotplugd.socket's Backlog=
    address = listener.getsockname()
    config = write_config(tmp_path / "c.toml", scheduler=HOLD, metrics_port=free_port())
    procs.append(daemon := DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address},
                                         listen=[listener]))
    listener.close()
    notify.wait_for(ready)
    scrape(*address)
    idle = threads(daemon.pid)
    slow = []
    try:
        for _ in range(300):
            slow.append(socket.create_connection(address, timeout=10))
            slow[-1].sendall(b"GET /metrics HT")
        assert slow[0].recv(1) == b"", "the oldest slow connection was not closed to make room"
        assert threads(daemon.pid) <= idle + MetricsConfig().max_connections
        assert "hotplugd_pending_blocks 8.0" in scrape(*address)
    finally:
        for sock in slow:
            sock.close()
    assert "hotplugd_pending_blocks 8.0" in scrape(*address)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
