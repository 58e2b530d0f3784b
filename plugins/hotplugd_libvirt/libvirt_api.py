"""The real :class:`~.hypervisor.Hypervisor`: libvirt-python (``libvirt``, ``libvirt_qemu``).

Imported only when the ``libvirt`` backend is built. Every method blocks and is
run by the backend in a worker thread.

libvirt delivers events through an event-loop implementation registered once
per process, before the first connection: this module registers libvirt's
default one and runs it in one daemon thread (:func:`ensure_event_loop`). That
thread only runs libvirt's callbacks, which turn each event into a plain
:mod:`.hypervisor` event and hand it to the backend's sink (a thread-safe,
non-blocking post to the daemon's loop); all the work happens in the daemon's
task group. The same thread runs the connection's keepalive, so a libvirtd
that hangs is noticed (the connection closes) even while no call is made.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import libvirt
import libvirt_qemu

from hotplugd_guestagent.errors import AgentTimeout, AgentUnavailable, CommandFailed

from .hypervisor import (
    AgentNotConnected,
    AgentState,
    Closed,
    ConnectionLost,
    DomainInfo,
    HypervisorError,
    Lifecycle,
    MemoryChanged,
    MetadataChanged,
    Sink,
)

#: Keepalive: a probe every 5 s, the connection closed after 3 unanswered (libvirtd gone without a FIN).
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
#: libvirt error codes that mean the connection itself failed.
_LINK_CODES = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                         libvirt.VIR_ERR_INVALID_CONN})
_LINK_WORDS = ("client socket is closed", "no connection", "connection reset", "end of file", "broken pipe")
#: Errors of a domain that is not there to ask (stopped, gone, migrated away, no agent channel).
_DOMAIN_CODES = frozenset({libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID,
                           libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_AGENT_UNSYNCED})

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        # libvirt prints every error to stderr by default: the backend reports them itself.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _loop_thread.start()


def is_link_error(exc: libvirt.libvirtError) -> bool:
    """The connection failed (libvirtd gone or restarting), as opposed to a refused call."""
    message = (exc.get_error_message() or "").lower()
    return exc.get_error_code() in _LINK_CODES or any(word in message for word in _LINK_WORDS)


def agent_error(command: str, exc: libvirt.libvirtError, domain: str) -> Exception:
    """A failed ``qemuAgentCommand`` as the shared agent errors (or ConnectionLost)."""
    code, message = exc.get_error_code(), exc.get_error_message() or str(exc)
    if is_link_error(exc):
        return ConnectionLost(f"libvirt: {message}")
    if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
        if "not connected" in message:
            return AgentNotConnected(f"{domain}: {message}")
        return AgentTimeout(f"{domain}: {message}")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return AgentTimeout(f"{domain}: {message}")
    if code in _DOMAIN_CODES:
        return AgentUnavailable(f"{domain}: {message}")
    if code in (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
        # qemuAgentCheckError: "unable to execute QEMU agent command '<cmd>': <desc>" (the class is lost)
        return CommandFailed(command, "libvirt", message)
    return AgentUnavailable(f"{domain}: libvirt error {code}: {message}")


class LibvirtConnection:
    """One ``virConnect`` with the backend's event callbacks registered."""

    def __init__(self, uri: str, conn: Any, sink: Sink) -> None:
        self.uri = uri
        self._conn = conn
        self._sink = sink
        self._callbacks: list[int] = []
        ids = (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
             lambda c, dom, event, detail, _: sink(Lifecycle(dom.name(), event, detail))),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
             lambda c, dom, state, reason, _: sink(AgentState(
                 dom.name(), state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED))),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
             lambda c, dom, alias, _: sink(MemoryChanged(dom.name(), str(alias)))),
            (libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
             lambda c, dom, alias, size, _: sink(MemoryChanged(dom.name(), str(alias), int(size) * 1024))),
            (libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
             lambda c, dom, kind, nsuri, _: sink(MetadataChanged(dom.name()))),
        )
        try:
            for event_id, callback in ids:
                self._callbacks.append(conn.domainEventRegisterAny(None, event_id, callback, None))
            conn.registerCloseCallback(lambda c, reason, _: sink(Closed(int(reason))), None)
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError as exc:
            self.close()
            raise ConnectionLost(f"libvirt {uri}: cannot subscribe to events: {exc.get_error_message()}") from None

    def running_domains(self, metadata_uri: str) -> list[DomainInfo]:
        try:
            domains = self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            found = []
            for dom in domains:
                try:
                    found.append(DomainInfo(dom.name(), dom.UUIDString(), dom.ID(), self._metadata(dom, metadata_uri)))
                except libvirt.libvirtError as exc:
                    if is_link_error(exc):
                        raise
                    continue  # gone between the listing and the look: not running
            return found
        except libvirt.libvirtError as exc:
            if is_link_error(exc):
                raise ConnectionLost(f"libvirt {self.uri}: {exc.get_error_message()}") from None
            raise HypervisorError(f"libvirt {self.uri}: listing domains: {exc.get_error_message()}") from None

    @staticmethod
    def _metadata(dom: Any, uri: str) -> str | None:
        if not uri:
            return None
        try:
            return str(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, uri, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise

    def agent_command(self, domain: str, command: str, timeout: int) -> str:
        name = _command_name(command)
        try:
            dom = self._conn.lookupByName(domain)
            return str(libvirt_qemu.qemuAgentCommand(dom, command, timeout, 0))
        except libvirt.libvirtError as exc:
            raise agent_error(name, exc, domain) from None

    def domain_xml(self, domain: str) -> str:
        try:
            return str(self._conn.lookupByName(domain).XMLDesc(0))
        except libvirt.libvirtError as exc:
            if is_link_error(exc):
                raise ConnectionLost(f"libvirt {self.uri}: {exc.get_error_message()}") from None
            raise HypervisorError(f"libvirt {self.uri}: {domain}: {exc.get_error_message()}") from None

    def close(self) -> None:
        for callback in self._callbacks:
            try:
                self._conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass
        self._callbacks.clear()
        try:
            self._conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass


def _command_name(command: str) -> str:
    try:
        return str(json.loads(command).get("execute", "?"))
    except (ValueError, AttributeError):
        return "?"


class LibvirtHypervisor:
    """Opens :class:`LibvirtConnection` s (libvirt's event loop started first)."""

    def open(self, uri: str, sink: Sink) -> LibvirtConnection:
        ensure_event_loop()
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise ConnectionLost(f"libvirt {uri}: {exc.get_error_message()}") from None
        return LibvirtConnection(uri, conn, sink)
