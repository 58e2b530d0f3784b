"""Serving the metrics: on a socket systemd hands over (``LISTEN_FDS``), else on our own.

The HTTP server (``hotplugd/observe/httpserver.py``) runs in threads of its own, so a
scrape never waits for the event loop (and scrape-time collectors only read), and its
cost is bounded: ``metrics.max_connections`` connections, ``metrics.read_timeout`` for a
request's head. The default address is loopback: the endpoint tells about the host's
memory, which is nobody else's business unless the operator says so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, write_to_textfile

from hotplugd.config import MetricsConfig
from hotplugd.errors import ConfigError, HotplugdError
from hotplugd.observe.endpoint import responder
from hotplugd.observe.httpserver import BoundedHTTPServer

log = structlog.get_logger("hotplugd.observe.server")

SD_LISTEN_FDS_START = 3
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
#: The listen backlog of a socket we bind, as ``Backlog=`` in systemd/hotplugd.socket: connections
#: past ``metrics.max_connections`` wait there, costing the daemon nothing (the kernel caps it
#: at net.core.somaxconn).
BACKLOG = 4096


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

    http: BoundedHTTPServer
    address: tuple[str, int]

    def __repr__(self) -> str:
        host, port = self.address
        return f"<MetricsServer http://{host}:{port}/metrics>"

    def close(self) -> None:
        self.http.close()


def _socket_name(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    if sock.family != socket.AF_UNIX:
        return str(name[0]), int(name[1])
    path = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return ("@" + path[1:] if path.startswith("\0") else path), 0


def serve_socket(sock: socket.socket, registry: CollectorRegistry, cfg: MetricsConfig | None = None) -> MetricsServer:
    """Serve ``registry`` on an already bound and listening socket (systemd socket activation).

    The socket is used as it is: no ``socket()`` call of our own, so that under
    ``RestrictAddressFamilies=AF_UNIX AF_NETLINK`` the AF_INET socket systemd hands over
    still works; a unix stream socket works too.
    """
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ConfigError(
            f"the socket systemd handed over (fd {sock.fileno()}) is not a listening stream socket",
            hint="hotplugd.socket needs ListenStream= and Accept=no",
        )
    cfg = cfg or MetricsConfig()
    http = BoundedHTTPServer(sock, responder(registry), max_connections=cfg.max_connections,
                             read_timeout=cfg.read_timeout)
    http.start()
    return MetricsServer(http, _socket_name(sock))


def serve(registry: CollectorRegistry, cfg: MetricsConfig,
          environ: dict[str, str] | None = None) -> MetricsServer | None:
    """Serve ``registry``: on the first socket systemd passed, else bind ``cfg.address:cfg.port``."""
    fds = listen_fds(environ, unset=True)
    for fd in fds[1:]:
        log.warning("socket_ignored", fd=fd, hint="hotplugd serves metrics on the first socket only")
    if fds:
        return serve_socket(socket.socket(fileno=fds[0]), registry, cfg)
    if not cfg.enabled:
        return None
    return serve_socket(_bind(cfg.address, cfg.port), registry, cfg)


def _bind(address: str, port: int) -> socket.socket:
    """A listening socket on ``address:port``, IPv4 or IPv6 as the address says."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        return socket.create_server(sockaddr, family=family, backlog=BACKLOG,
                                    dualstack_ipv6=family == socket.AF_INET6 and socket.has_dualstack_ipv6())
    except OSError as exc:
        raise HotplugdError(
            f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}",
            hint="change metrics.port or metrics.address, or set metrics.enabled = false",
        ) from None


def write_textfile(registry: CollectorRegistry, path: str) -> None:
    """Write a node_exporter textfile atomically (prometheus_client renames a temp file); no-op without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(path, registry)
