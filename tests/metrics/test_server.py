"""The endpoint: bound where configured, on a socket systemd hands over, clear errors when it cannot."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest

from hotplugd.config import MetricsConfig
from hotplugd.errors import HotplugdError
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.server import listen_fds, serve, serve_socket, write_textfile


def get(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_serves_the_registry_on_the_configured_address():
    metrics = Metrics()
    metrics.pending_blocks.set(5)
    server = serve(metrics.registry, MetricsConfig(address="127.0.0.1", port=0), environ={})
    assert server is not None
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        assert "hotplugd_pending_blocks 5.0" in get(host, port)
    finally:
        server.close()


def test_a_port_in_use_is_a_user_error_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HotplugdError, match=f"cannot serve metrics on 127.0.0.1:{port}") as info:
            serve(Metrics().registry, MetricsConfig(address="127.0.0.1", port=port), environ={})
    assert "metrics.port" in str(info.value)


def test_disabled_metrics_serve_nothing():
    assert serve(Metrics().registry, MetricsConfig(enabled=False), environ={}) is None


def test_serves_on_a_socket_handed_over():
    metrics = Metrics()
    metrics.failed_blocks.set(2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = serve_socket(sock, metrics.registry)
    try:
        assert "hotplugd_failed_blocks 2.0" in get(*server.address)
    finally:
        server.close()


def test_listen_fds_are_taken_only_when_meant_for_this_process():
    assert listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []  # another process's sockets
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "x"}) == []
    assert listen_fds({}) == []


def test_textfile_goes_where_asked_and_nowhere_without_a_path(tmp_path):
    metrics = Metrics()
    metrics.pending_bytes.set(1 << 30)
    write_textfile(metrics.registry, "")
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "collector" / "hotplugd.prom"
    write_textfile(metrics.registry, str(target))
    assert "hotplugd_pending_bytes 1.073741824e+09" in target.read_text()
