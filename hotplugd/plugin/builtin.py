"""The core's own hook implementations, registered by every plugin manager before the entry points."""

from __future__ import annotations

from hotplugd.model import Block, ZoneRequest, narrow
from hotplugd.plugin.spec import hookimpl


@hookimpl(trylast=True)
def hotplugd_choose_zone(block: Block, requested: ZoneRequest) -> ZoneRequest:
    """Built-in: the policy's request, narrowed to the block's valid zones."""
    return narrow(requested, block.valid_zones)
