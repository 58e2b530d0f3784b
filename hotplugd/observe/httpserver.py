"""An HTTP/1.1 server whose cost is bounded whatever its clients do.

A thread per connection (socketserver, prometheus_client's server) lets anyone who reaches
the port hold a thread and its memory for as long as they like, just by sending half a
request; 3,000 such connections tripled the daemon (issue 18). Here:

- one thread accepts connections and reads every request's head without blocking, through
  a selector; h11 parses it, and a head larger than ``MAX_HEAD`` gets a 431;
- only a complete request gets a thread, which builds the reply, sends it (at most
  ``read_timeout`` for the whole send) and closes the connection, so the thread ends;
- at most ``max_connections`` connections are open at once, reading or being answered;
  a head not complete ``read_timeout`` after its connection was accepted is closed;
- a new connection when every slot is taken closes the oldest connection still reading
  its head (a well-behaved client sends its request at once, so the oldest one reading
  is the slowest): a flood of slow clients cannot lock a scrape out. When every slot is
  answering a request, nothing is accepted: connections wait in the kernel's listen
  backlog, costing the daemon nothing.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import structlog

log = structlog.get_logger("hotplugd.observe.httpserver")

#: The largest request head (request line and headers) read; a scrape's is a few hundred bytes.
MAX_HEAD = 16 * 1024
#: What is read and dropped after a refused head, so that closing does not reset the reply away.
REFUSE_DRAIN = 4 * MAX_HEAD
#: Connections accepted per wake-up before the heads already open are read again.
ACCEPT_BATCH = 64
#: How long accepting pauses after accept() failed for lack of descriptors or memory.
ACCEPT_PAUSE = 1.0
_ACCEPT, _WAKE = "accept", "wake"


@dataclass(frozen=True)
class Reply:
    """A complete answer; the server adds ``Content-Length`` and ``Connection: close``."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


#: Builds the reply to a request; it runs on the request's own thread, so it may block.
Responder = Callable[[h11.Request], Reply]


@dataclass(eq=False)
class _Reading:
    """A connection whose request head is still arriving, and when it must have."""

    sock: socket.socket
    http: h11.Connection
    deadline: float
    received: int = 0


class BoundedHTTPServer:
    """Answers HTTP on ``listener`` with ``respond``; see the module docstring for the bounds."""

    def __init__(self, listener: socket.socket, respond: Responder, *, max_connections: int,
                 read_timeout: float, name: str = "hotplugd-metrics") -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._listener = listener
        self._respond = respond
        self._name = name
        self._reading: dict[socket.socket, _Reading] = {}  # in accept order, so in deadline order
        self._answering = 0  # connections handed to a request thread; changed under _lock
        self._lock = threading.Lock()
        self._closing = False
        self._accept_paused_until = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __repr__(self) -> str:
        return f"<BoundedHTTPServer reading={len(self._reading)} answering={self._answering}/{self.max_connections}>"

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close the listening socket and the connections still reading.

        Requests being answered finish on their own threads (each within ``read_timeout``).
        """
        self._closing = True
        self._wake()
        self._thread.join()
        for conn in list(self._reading.values()):
            self._drop(conn)
        self._selector.close()
        self._listener.close()
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    # The selector thread: accepting and reading heads.

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug: say so, rather than leave a port that never answers
            log.exception("metrics_server_failed")
            raise

    def _loop(self) -> None:
        listening = False
        while not self._closing:
            now = time.monotonic()
            want = self._may_accept(now)
            if want != listening:
                if want:
                    self._selector.register(self._listener, selectors.EVENT_READ, _ACCEPT)
                else:
                    self._selector.unregister(self._listener)
                listening = want
            # Heads that arrived first, then accepting: one accepted past the cap closes the
            # oldest connection still reading, which should not be one whose head is here.
            ready = sorted(self._selector.select(self._timeout(now)), key=lambda event: event[0].data is _ACCEPT)
            for key, _ in ready:
                if key.data is _ACCEPT:
                    self._accept()
                elif key.data is _WAKE:
                    while _read_some(self._wake_r):
                        pass
                elif self._reading.get(key.fileobj) is key.data:  # not dropped earlier in this round
                    self._read(key.data)
            self._expire(time.monotonic())

    def _open(self) -> int:
        return len(self._reading) + self._answering

    def _may_accept(self, now: float) -> bool:
        return now >= self._accept_paused_until and (bool(self._reading) or self._open() < self.max_connections)

    def _timeout(self, now: float) -> float | None:
        """Until the oldest head's deadline or the end of an accept pause; None: until woken."""
        oldest = next(iter(self._reading.values()), None)
        ends = [oldest.deadline] if oldest else []
        if self._accept_paused_until > now:
            ends.append(self._accept_paused_until)
        return max(0.0, min(ends) - now) if ends else None

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._may_accept(time.monotonic()):
                return
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the listener stays readable, so pause
                log.warning("metrics_accept_failed", error=exc.strerror or str(exc), pause_seconds=ACCEPT_PAUSE)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            sock.setblocking(False)
            conn = _Reading(sock, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD),
                            time.monotonic() + self.read_timeout)
            self._reading[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._read(conn)  # a well-behaved client's request is usually there already
            while self._open() > self.max_connections and self._reading:
                self._drop(next(iter(self._reading.values())))  # the oldest head still arriving

    def _read(self, conn: _Reading) -> None:
        try:  # at most one byte past MAX_HEAD in all, which h11 refuses when it is still a head
            data = conn.sock.recv(MAX_HEAD + 1 - conn.received)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.received += len(data)
        conn.http.receive_data(data)
        try:
            event = conn.http.next_event()
        except h11.RemoteProtocolError as exc:
            self._refuse(conn, exc.error_status_hint, str(exc))
            return
        if isinstance(event, h11.Request):
            self._answer(conn, event)
        elif event is not h11.NEED_DATA:
            self._drop(conn)

    def _expire(self, now: float) -> None:
        for conn in list(self._reading.values()):
            if conn.deadline > now:
                return
            self._drop(conn)

    def _drop(self, conn: _Reading) -> None:
        self._selector.unregister(conn.sock)
        del self._reading[conn.sock]
        conn.sock.close()

    def _refuse(self, conn: _Reading, status: int, why: str) -> None:
        """Best effort: one non-blocking send of a short error reply, then close.

        What the client sent past the head is read and dropped first (up to ``REFUSE_DRAIN``
        bytes): closing a socket with unread data resets it, and the reset can destroy the
        reply before the client reads it.
        """
        reply = Reply(status, [("Content-Type", "text/plain; charset=utf-8")], f"{why}\n".encode())
        try:
            conn.sock.send(_encode(conn.http, reply, head_only=False))
            for _ in range(REFUSE_DRAIN // MAX_HEAD):
                if not conn.sock.recv(MAX_HEAD):
                    break
        except (OSError, h11.LocalProtocolError):
            pass
        self._drop(conn)

    def _answer(self, conn: _Reading, request: h11.Request) -> None:
        self._selector.unregister(conn.sock)
        del self._reading[conn.sock]
        with self._lock:
            self._answering += 1
        try:
            threading.Thread(target=self._reply, args=(conn, request), name=f"{self._name}-request",
                             daemon=True).start()
        except RuntimeError:  # no thread to be had: the client gets a closed connection
            self._done(conn.sock)

    # A request's own thread.

    def _reply(self, conn: _Reading, request: h11.Request) -> None:
        try:
            try:
                reply = self._respond(request)
            except Exception:
                log.exception("metrics_reply_failed")
                reply = Reply(500, [("Content-Type", "text/plain; charset=utf-8")],
                              b"the metrics could not be collected: see hotplugd's log\n")
            data = _encode(conn.http, reply, head_only=request.method == b"HEAD")
            conn.sock.settimeout(self.read_timeout)  # a client that does not read loses its answer
            conn.sock.sendall(data)
        except OSError:
            pass  # the client went away or stopped reading: nobody to tell
        finally:
            self._done(conn.sock)

    def _done(self, sock: socket.socket) -> None:
        sock.close()
        with self._lock:
            self._answering -= 1
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:
                    pass  # already awake: the pipe is full of wake-ups


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _encode(http: h11.Connection, reply: Reply, *, head_only: bool) -> bytes:
    """The bytes of ``reply``; without the body for HEAD (the length is still the GET's)."""
    headers = [*reply.headers, ("Content-Length", str(len(reply.body))), ("Connection", "close")]
    out = http.send(h11.Response(status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase))
    if not head_only:
        out = (out or b"") + (http.send(h11.Data(data=reply.body)) or b"")
    return (out or b"") + (http.send(h11.EndOfMessage()) or b"")
