"""Serving the metrics: on a socket systemd hands over (``LISTEN_FDS``), else on our own.

The HTTP server is prometheus_client's threaded WSGI server, in its own thread,
so a scrape never waits for the event loop (and scrape-time collectors only
read). The default address is loopback: the endpoint tells about the host's
memory, which is nobody else's business unless the operator says so.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

import structlog
from prometheus_client import (
    CollectorRegistry,
    make_wsgi_app,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.exposition import ThreadingWSGIServer

from hotplugd.config import MetricsConfig
from hotplugd.errors import ConfigError, HotplugdError

log = structlog.get_logger("hotplugd.observe.server")

SD_LISTEN_FDS_START = 3
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(environ: MutableMapping[str, str] | None = None, *, unset: bool = False) -> list[int]:
    """File descriptors passed by systemd socket activation, if they are meant for this process.

    Like ``sd_listen_fds(unset)``: with ``unset`` the ``LISTEN_*`` variables are removed so that
    no child process takes the sockets for its own; the descriptors are made close-on-exec.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS", "")
    if unset:
        for name in LISTEN_VARIABLES:
            env.pop(name, None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


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


class _HandedServer(ThreadingWSGIServer):
    """The WSGI server on a socket it did not bind; a unix stream socket works too.

    It never calls ``socket()`` itself (TCPServer's constructor would, even unbound): under
    ``RestrictAddressFamilies=AF_UNIX AF_NETLINK`` an AF_INET ``socket()`` fails, while the
    AF_INET socket systemd hands over works.
    """

    def __init__(self, sock: socket.socket) -> None:
        host, port = _socket_name(sock)
        socketserver.BaseServer.__init__(self, (host, port), _QuietHandler)
        self.socket = sock
        self.address_family = sock.family
        self.server_name, self.server_port = host, port

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, peer = self.socket.accept()
        if self.socket.family == socket.AF_UNIX:
            peer = ("unix", 0)  # wsgiref reads client_address[0]; a unix peer has no address
        return conn, peer


def _socket_name(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    if sock.family != socket.AF_UNIX:
        return str(name[0]), int(name[1])
    path = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return ("@" + path[1:] if path.startswith("\0") else path), 0


def serve_socket(sock: socket.socket, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on an already bound and listening socket (systemd socket activation)."""
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ConfigError(
            f"the socket systemd handed over (fd {sock.fileno()}) is not a listening stream socket",
            hint="hotplugd.socket needs ListenStream= and Accept=no",
        )
    server = _HandedServer(sock)
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="hotplugd-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def serve(registry: CollectorRegistry, cfg: MetricsConfig, environ: dict[str, str] | None = None) -> MetricsServer | None:
    """Serve ``registry``: on the first socket systemd passed, else bind ``cfg.address:cfg.port``."""
    fds = listen_fds(environ, unset=True)
    for fd in fds[1:]:
        log.warning("socket_ignored", fd=fd, hint="hotplugd serves metrics on the first socket only")
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
