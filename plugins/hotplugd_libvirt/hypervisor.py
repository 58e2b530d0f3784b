"""What the backend asks of libvirt, as a small interface, and what libvirt tells it, as plain events.

:class:`Connection` is everything the backend calls: list the running domains,
read a domain, run a guest-agent command, close. Every call blocks (libvirt's
RPC): the backend runs them in worker threads, never on the loop. The real one
is :mod:`.libvirt_api` (imported only when the backend is built, so a host
without libvirt-python runs the other backends); the tests have a fake.

libvirt's callbacks run on its event thread; a connection turns each into one
of the events below and hands it to the ``sink`` it was opened with, which
must be thread-safe and must not block (the backend's posts it to the loop).
Errors are this module's, not libvirt's: :class:`ConnectionLost` (libvirtd
went away: reconnect), the agent's :mod:`hotplugd_guestagent.errors` for an
agent command, :class:`HypervisorError` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hotplugd_guestagent.errors import AgentUnavailable


class HypervisorError(Exception):
    """libvirt refused a call (not the agent, not the connection)."""


class ConnectionLost(HypervisorError):
    """The connection to libvirtd failed or closed: the backend reconnects, with backoff."""


class AgentNotConnected(AgentUnavailable):
    """libvirt has no connection to the guest's agent: not started in the guest, or libvirtd has just restarted
    and not taken the agent's channel back yet (AGENT_LIFECYCLE says when it has)."""


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A running domain as the selection sees it."""

    name: str
    uuid: str
    id: int = 0  # libvirt's id of this run of the domain (a new one at each start)
    metadata: str | None = None  # the configured metadata element (XML); None: the domain has none

    @property
    def identity(self) -> str:
        """This run of this domain: a domain stopped and started again (or another of the same name) differs."""
        return f"{self.uuid}/{self.id}"


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """VIR_DOMAIN_EVENT_ID_LIFECYCLE: ``event`` is libvirt's (STARTED 2, STOPPED 5, ...), ``detail`` its detail."""

    domain: str
    event: int
    detail: int


@dataclass(frozen=True, slots=True)
class AgentState:
    """VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE: the guest agent connected or went away."""

    domain: str
    connected: bool


@dataclass(frozen=True, slots=True)
class MemoryChanged:
    """A device was added (VIR_DOMAIN_EVENT_ID_DEVICE_ADDED) or a virtio-mem device's size changed
    (VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE; QEMU sends at most one a second while it grows)."""

    domain: str
    alias: str
    size: int | None = None  # virtio-mem's new size in bytes; None for DEVICE_ADDED


@dataclass(frozen=True, slots=True)
class MetadataChanged:
    """VIR_DOMAIN_EVENT_ID_METADATA_CHANGE: the selection may have changed."""

    domain: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection closed (libvirtd stopped or restarted, keepalive timeout): ``reason`` is libvirt's."""

    reason: int


HypervisorEvent = Lifecycle | AgentState | MemoryChanged | MetadataChanged | Closed
Sink = Callable[[HypervisorEvent], None]

#: libvirt's lifecycle events (virDomainEventType) the backend acts on.
EVENT_STARTED = 2
EVENT_STOPPED = 5
EVENT_UNDEFINED = 1
EVENT_SHUTDOWN = 6
EVENT_CRASHED = 8
#: STOPPED's detail when the domain migrated away.
STOPPED_MIGRATED = 3


class Connection(Protocol):
    """One connection to libvirtd; every method blocks (run it in a worker thread)."""

    uri: str

    def running_domains(self, metadata_uri: str) -> list[DomainInfo]:
        """Every active domain (``metadata`` read for ``metadata_uri``, when not empty). ConnectionLost."""
        ...

    def agent_command(self, domain: str, command: str, timeout: int) -> str:
        """``qemuAgentCommand``: the agent's whole reply object as text. Raises the agent's errors
        (AgentTimeout, AgentUnavailable, CommandFailed) or ConnectionLost."""
        ...

    def domain_xml(self, domain: str) -> str:
        """The running domain's live XML (its devices with their aliases and addresses). ConnectionLost,
        HypervisorError."""
        ...

    def close(self) -> None: ...


class Hypervisor(Protocol):
    """Opens connections: the real libvirt, or the tests' fake."""

    def open(self, uri: str, sink: Sink) -> Connection:
        """Connect and subscribe to the events above (delivered to ``sink``). ConnectionLost when it cannot."""
        ...
