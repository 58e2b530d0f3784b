"""One qga guest: the shared :class:`~hotplugd_guestagent.link.AgentLink` over the agent's own socket,
told of memory and of the agent's port by the guest's QMP events (docs/qga.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hotplugd_guestagent.link import AgentLink

from .agent import AgentClient
from .settings import GuestSettings, Settings


class GuestLink(AgentLink):
    """One guest (one domain of the core's model, named by the guest's name) and everything known of it."""

    def __init__(self, settings: GuestSettings, options: Settings,
                 client: AgentClient | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings.name, options, client or AgentClient(settings.qga, options.timeout, settings.name),
                         clock, kind="qga")
        self.settings = settings

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        """A QMP event of this guest's QEMU (from the daemon's own monitor)."""
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        if name == "MEMORY_DEVICE_SIZE_CHANGE" or (name == "ACPI_DEVICE_OST" and info.get("slot-type") == "DIMM"):
            self.memory_event()
        elif name == "VSERPORT_CHANGE" and self.settings.port_id and data.get("id") == self.settings.port_id:
            self.port_changed(bool(data.get("open")))

    def port_changed(self, is_open: bool) -> None:
        """``VSERPORT_CHANGE`` of the agent's port."""
        self.agent_changed(is_open)
