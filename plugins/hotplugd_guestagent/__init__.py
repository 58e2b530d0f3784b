"""The guest-agent side of onlining a guest's memory from the host, shared by the ``qga`` and ``libvirt`` backends.

Not a plugin (it registers nothing): a library the two backends import. Everything
here is independent of how requests reach the agent (the agent's socket for
``qga``, libvirt's ``qemuAgentCommand`` for ``libvirt``):

- :mod:`.errors`: what can go wrong (:class:`AgentError` and its kinds, :func:`failure_reason`);
- :mod:`.framing`: one reply's bytes framed and decoded within bounds (size, tokens, depth);
- :mod:`.commands`: the requests (``guest-get-memory-blocks``, ``guest-set-memory-blocks``,
  block size, vCPUs, files) with their replies checked, over any :class:`~.commands.Agent`;
- :mod:`.results`: one block's answer as the core's ``OnlineResult``;
- :mod:`.blocks`: a guest's blocks as core blocks, and events from two listings;
- :mod:`.link`: :class:`AgentLink`, one guest: health and backoff, batching of
  ``guest-set-memory-blocks``, false-success detection;
- :mod:`.fleet`: :class:`GuestFleet`, the base of both backends: their guests' links, each guest's task
  (its poll loop) in the daemon's task group, guests appearing and going away, scans, topology, onlining;
- :mod:`.validators`: what both backends' tables share (``concurrency``, guest names, the guest list and backoff).

The guest's agent is the tenant's: every reply is untrusted (docs/qga.md, "Hostile guests").
"""

from __future__ import annotations

from .commands import Agent, request, unwrap
from .errors import (
    AgentAborted,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnavailable,
    CommandFailed,
    failure_reason,
)
from .fleet import GuestFleet, poll_forever
from .link import AgentLink, LinkOptions, backoff

__all__ = ["Agent", "AgentAborted", "AgentError", "AgentLink", "AgentProtocolError", "AgentTimeout",
           "AgentUnavailable", "CommandFailed", "GuestFleet", "LinkOptions", "backoff", "failure_reason",
           "poll_forever", "request", "unwrap"]
