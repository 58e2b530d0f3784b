"""Serving the metrics: on a socket systemd hands over (``LISTEN_FDS``), else on our own.

The HTTP server is prometheus_client's threaded WSGI server, in its own thread,
so a scrape never waits for the event loop (and scrape-time collectors only
read). The default address is loopback: the endpoint tells about the host's
memory, which is nobody else's business unless the operator says so.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server, write_to_textfile
from prometheus_client.exposition import ThreadingWSGIServer

from .config import MetricsConfig
from .errors import HotplugdError

SD_LISTEN_FDS_START = 3


def listen_fds(environ: dict[str, str] | None = None) -> list[int]:
    """File descriptors passed by systemd socket activation, if they are meant for this process."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = env.get("LISTEN_FDS", "")
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))) if count.isdigit() else []


@dataclass
class MetricsServer:
    """A running endpoint: ``address`` is where it listens (the real port when 0 was asked)."""

    server: ThreadingWSGIServer
    thread: threading.Thread

    def __repr__(self) -> str:
        host, port = self.address
        return f"<MetricsServer http://{host}:{port}/metrics>"

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds is not news."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def serve_socket(sock: socket.socket, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on an already bound and listening socket (systemd socket activation)."""
    server = ThreadingWSGIServer(("", 0), _QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    host, port = sock.getsockname()[:2]
    server.server_address = (host, port)
    server.server_name, server.server_port = host, port
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="hotplugd-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def serve(registry: CollectorRegistry, cfg: MetricsConfig, environ: dict[str, str] | None = None) -> MetricsServer | None:
    """Serve ``registry``: on the first socket systemd passed, else bind ``cfg.address:cfg.port``."""
    fds = listen_fds(environ)
    if fds:
        return serve_socket(socket.socket(fileno=fds[0]), registry)
    if not cfg.enabled:
        return None
    try:
        server, thread = start_http_server(cfg.port, cfg.address, registry=registry)
    except OSError as exc:
        raise HotplugdError(
            f"cannot serve metrics on {cfg.address}:{cfg.port}: {exc.strerror or exc}",
            hint="change metrics.port or metrics.address, or set metrics.enabled = false",
        ) from None
    return MetricsServer(server, thread)


def write_textfile(registry: CollectorRegistry, path: str) -> None:
    """Write a node_exporter textfile atomically (prometheus_client renames a temp file); no-op without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(path, registry)
