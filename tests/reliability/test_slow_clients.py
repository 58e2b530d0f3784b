"""10,000 slow clients against the metrics endpoint of a real daemon (issue 18).

Each client connects (non-blocking) and sends half a request line, then waits. A
thread per connection (the endpoint before issue 18) grew the daemon by a thread and
its memory for each one; the bounded server gives none of them a thread and holds at
most ``metrics.max_connections``. Measured from the daemon's ``/proc/PID/status`` while
the connections are open: its RSS, its threads; then a well-behaved scrape; then, with
every connection closed, its thread count back to what it was idle.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotplugd.config import MetricsConfig

from .procs import Daemon

pytestmark = pytest.mark.reliability

CLIENTS = 10_000
#: Descriptors this test needs: the clients, and pytest's own.
NOFILE = CLIENTS + 500
HALF_REQUEST = b"GET /metrics HT"
#: The issue's bound on the daemon's growth under the attack.
MAX_RSS_GROWTH = 5 << 20
#: How long the clients may take to connect: the kernel drops SYNs while the 64-deep backlog
#: is full, and the client retries after 1 s, 3 s, ...
CONNECT_WITHIN = 20.0


@dataclass(frozen=True)
class Status:
    rss: int  # bytes
    threads: int


def status(pid: int) -> Status:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return Status(int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"]))


def scrape(port: int) -> str:
    """A well-behaved client: the whole request at once, and a second for the answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as response:
        return str(response.read().decode())


@pytest.fixture
def nofile() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NOFILE:
        pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}; {CLIENTS:,} connections need {NOFILE}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def daemon(tmp_path: Path, nofile: None) -> Iterator[tuple[Daemon, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sets = {"log_level": '"warning"', "metrics.address": '"127.0.0.1"', "metrics.port": str(port),
            "plugins.simulated.scenario": "[]"}
    args = ["--backend", "simulated"] + [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    proc = Daemon(args, tmp_path).start()
    try:
        proc.wait_ready()
        yield proc, port
    finally:
        proc.kill()


def open_slow_clients(port: int, sample: list[Status], pid: int) -> list[socket.socket]:
    """``CLIENTS`` sockets, each connected and sent ``HALF_REQUEST``; ``sample`` gets the daemon's status."""
    clients, connecting = [], selectors.DefaultSelector()
    for _ in range(CLIENTS):
        sock = socket.socket()
        sock.setblocking(False)
        clients.append(sock)
        if sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
            connecting.register(sock, selectors.EVENT_WRITE)
        if len(clients) % 500 == 0:
            sample.append(status(pid))
    deadline = time.monotonic() + CONNECT_WITHIN
    while connecting.get_map() and time.monotonic() < deadline:
        for key, _ in connecting.select(0.1):
            connecting.unregister(key.fileobj)
            sock = key.fileobj  # type: ignore[assignment]
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                try:
                    sock.send(HALF_REQUEST)
                except OSError:
                    pass  # the daemon already closed it to make room: it still cost a connection
        sample.append(status(pid))
    left = len(connecting.get_map())
    connecting.close()
    assert left == 0, f"{left} of {CLIENTS:,} connections still not connected after {CONNECT_WITHIN} s"
    return clients


def test_ten_thousand_slow_connections_cost_no_thread_and_no_memory(daemon) -> None:
    proc, port = daemon
    assert proc.proc is not None
    pid = proc.proc.pid
    scrape(port)  # every code path of a scrape has run once: its imports and caches are in the idle figures
    idle = status(pid)
    cap = MetricsConfig().max_connections
    sample = [idle]
    clients = open_slow_clients(port, sample, pid)
    try:
        peak_rss, peak_threads = max(s.rss for s in sample), max(s.threads for s in sample)
        print(f"\nidle: {idle.rss >> 10} KiB, {idle.threads} threads; with {CLIENTS:,} slow connections: "
              f"peak {peak_rss >> 10} KiB (+{(peak_rss - idle.rss) >> 10} KiB), {peak_threads} threads")
        assert peak_rss - idle.rss <= MAX_RSS_GROWTH, f"RSS grew by {(peak_rss - idle.rss) >> 10} KiB"
        assert peak_threads <= idle.threads + cap, f"{peak_threads} threads, idle {idle.threads}, cap {cap}"
        assert "hotplugd_pending_blocks" in scrape(port), "a well-behaved scrape got no answer during the attack"
    finally:
        for sock in clients:
            sock.close()
    deadline = time.monotonic() + MetricsConfig().read_timeout + 10
    while (after := status(pid)).threads > idle.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after.threads <= idle.threads, f"{after.threads} threads after the attack, {idle.threads} idle"
    assert "hotplugd_pending_blocks" in scrape(port)
