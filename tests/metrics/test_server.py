"""The endpoint: bound where configured, on a socket systemd hands over, clear errors when it cannot, bounded."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import h11
import pytest
from prometheus_client import CollectorRegistry, Gauge

from hotplugd.config import MetricsConfig, from_mapping
from hotplugd.errors import ConfigError, HotplugdError
from hotplugd.observe.httpserver import BoundedHTTPServer, Reply
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


# The endpoint's surface and its bounds (issue 18): only /metrics and /, GET and HEAD; a
# deadline for a request's head; a cap on connections, past which the slowest is closed.


@pytest.fixture
def endpoint():
    """Serve a registry of one gauge with small bounds; yields (server, registry)."""
    registry = CollectorRegistry()
    Gauge("hotplugd_pending_blocks", "blocks waiting", registry=registry).set(3)
    server = serve(registry, MetricsConfig(address="127.0.0.1", port=0, max_connections=4, read_timeout=0.3),
                   environ={})
    assert server is not None
    yield server
    server.close()


def exchange(address: tuple[str, int], request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer (read until the server closes)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def request(method: str, target: str, *extra: str) -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "Host: localhost", *extra, "", ""]).encode()


def closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed ``sock`` within ``timeout`` (False: still open, or an answer came)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def request_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("hotplugd-metrics") or "process_request" in t.name)


def test_only_metrics_and_an_index_linking_it_answer(endpoint):
    status, headers, body = exchange(endpoint.address, request("GET", "/"))
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert b'href="/metrics"' in body
    status, _, body = exchange(endpoint.address, request("GET", "/metrics?x=1"))
    assert status == 200 and b"hotplugd_pending_blocks 3.0" in body
    for path in ("/favicon.ico", "/metricsx", "/metrics/", "/api/v1/query", "/%2e%2e/etc/passwd"):
        status, _, body = exchange(endpoint.address, request("GET", path))
        assert status == 404, path
        assert b"/metrics" in body


def test_methods_other_than_get_and_head_get_405(endpoint):
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"):
        status, headers, _ = exchange(endpoint.address, request(method, "/metrics", "Content-Length: 0"))
        assert (status, headers.get("allow")) == (405, "GET, HEAD"), method


def test_head_has_the_get_headers_and_no_body(endpoint):
    _, got, body = exchange(endpoint.address, request("GET", "/metrics"))
    status, headers, nothing = exchange(endpoint.address, request("HEAD", "/metrics"))
    assert (status, nothing) == (200, b"")
    assert headers["content-length"] == got["content-length"] == str(len(body))
    assert headers["content-type"] == got["content-type"]


def test_prometheus_client_exposition_is_kept(endpoint):
    """OpenMetrics when Accept asks for it, gzip when Accept-Encoding allows it, name[] restricts."""
    status, headers, body = exchange(endpoint.address, request(
        "GET", "/metrics?name[]=hotplugd_pending_blocks", "Accept: application/openmetrics-text; version=1.0.0",
        "Accept-Encoding: gzip"))
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n") and "hotplugd_pending_blocks 3.0" in text


def test_a_half_sent_request_is_closed_after_read_timeout(endpoint):
    with socket.create_connection(endpoint.address) as slow:
        slow.sendall(b"GET /metr")
        assert closed_by_server(slow), "the server still holds a connection that never finished its request"


def test_a_head_larger_than_16_KiB_is_refused_with_431(endpoint):
    status, _, _ = exchange(endpoint.address, request("GET", "/metrics", "X-Padding: " + "a" * (16 * 1024)))
    assert status == 431


def test_slow_connections_get_no_thread_and_cannot_lock_a_scrape_out(endpoint):
    """50 half-sent requests against a cap of 4: no thread for any, the oldest are closed, a scrape answers."""
    before = request_threads()
    slow = [socket.create_connection(endpoint.address) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /metrics HT")
        assert closed_by_server(slow[0]), "the oldest slow connection was not closed to make room"
        assert request_threads() <= before
        assert "hotplugd_pending_blocks 3.0" in get(*endpoint.address)
    finally:
        for sock in slow:
            sock.close()


def test_connections_past_the_cap_wait_in_the_backlog_and_are_all_answered():
    """With every slot answering a request, nothing more is accepted (no thread); they are answered in turn."""
    release, lock = threading.Event(), threading.Lock()
    answering, most = 0, 0

    def respond(_request: h11.Request) -> Reply:
        nonlocal answering, most
        with lock:
            answering += 1
            most = max(most, answering)
        release.wait(10)
        with lock:
            answering -= 1
        return Reply(200, [], b"ok")

    listener = socket.create_server(("127.0.0.1", 0))
    server = BoundedHTTPServer(listener, respond, max_connections=2, read_timeout=5)
    server.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(exchange, listener.getsockname(), request("GET", "/")) for _ in range(2)]
            while most < 2:
                time.sleep(0.01)
            answers += [pool.submit(exchange, listener.getsockname(), request("GET", "/")) for _ in range(4)]
            time.sleep(0.2)  # the four connect and send their requests while both slots are answering
            release.set()
            assert [answer.result()[2] for answer in answers] == [b"ok"] * 6
        assert most == 2
    finally:
        server.close()


def test_read_timeout_and_max_connections_are_checked_config_keys():
    config = from_mapping({"metrics": {"read_timeout": "250ms", "max_connections": 8}})
    assert (config.metrics.read_timeout, config.metrics.max_connections) == (0.25, 8)
    for key, value in (("read_timeout", 0), ("max_connections", 0), ("read_timeout", "forever")):
        with pytest.raises(ConfigError, match=f"metrics.{key}"):
            from_mapping({"metrics": {key: value}})
