"""What can go wrong talking to a guest agent, whatever carries the requests (a socket, libvirt).

Every error is an :class:`AgentError`: the backend treats it as "try again
later" (the block's outcome is transient) and leaves the agent alone for a
while. :func:`failure_reason` names it in a word for logs and reprs.
"""

from __future__ import annotations


class AgentError(Exception):
    """The agent could not answer; the block's outcome is transient (try again later)."""


class AgentUnavailable(AgentError):
    """The agent cannot be reached (its socket closed, QEMU gone or restarting, libvirt unreachable)."""


class AgentAborted(AgentUnavailable):
    """The request was given up: the hypervisor said the agent's port changed, no reply will come."""


class AgentTimeout(AgentError):
    """No reply in time (the agent is down, busy, or not started in the guest)."""


class AgentProtocolError(AgentError):
    """The agent broke the protocol: ``reason`` is ``protocol_error``, ``oversized_reply``, ``flood``,
    ``port_closed`` or ``false_success``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CommandFailed(AgentError):
    """The agent answered with an error object (``class``, ``desc``)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


def failure_reason(exc: Exception) -> str:
    """Why an agent counts as down, as a short word for logs: its protocol breach, or how the link failed."""
    if isinstance(exc, AgentProtocolError):
        return exc.reason
    if isinstance(exc, AgentTimeout):
        return "timeout"
    if isinstance(exc, AgentUnavailable):
        return "unavailable"
    return "error"
