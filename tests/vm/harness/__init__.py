"""hotplugd's real-kernel test harness: a QEMU (TCG) guest that shares this machine's ``/``.

Quickstart (``scripts/provision-vm`` first)::

    from harness import Guest, GuestConfig, GiB

    with Guest(GuestConfig(memhp_default_state="offline")) as guest:
        before = {b.index for b in guest.agent.memory_blocks()}
        guest.qmp.hotplug_dimm(GiB)                       # or guest.qmp.resize_virtio_mem(GiB)
        daemon = guest.start_hotplugd("--some-flag")      # <repo>/.venv/bin/hotplugd run --backend sysfs
        guest.agent.wait_blocks(exclude=before, min_count=8, state="online")
        print(daemon.stop().stdout)

Modules: :mod:`.guest` (boot, life cycle), :mod:`.client` (host side of the agent RPC),
:mod:`.agent` (runs in the guest), :mod:`.qmp` (QEMU monitor), :mod:`.initramfs` (built by
provision-vm), :mod:`.assets` (where ``.vm/`` is), :mod:`.errors`.
"""

from .assets import Assets, find_assets
from .client import AgentClient, CommandResult, GuestProcess, MemoryBlock, WaitResult
from .errors import AgentError, GuestError, HarnessError, NotProvisioned, QMPError
from .guest import Guest, GuestConfig
from .qmp import QMP, GiB

__all__ = [
    "AgentClient", "AgentError", "Assets", "CommandResult", "GiB", "Guest", "GuestConfig", "GuestError",
    "GuestProcess", "HarnessError", "MemoryBlock", "NotProvisioned", "QMP", "QMPError", "WaitResult",
    "find_assets",
]
