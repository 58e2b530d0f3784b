"""Other onliners, and settings that change what onlining costs: found at start and by ``hotplugd check``.

The kernel's own auto-online is not among them: ``auto_online_blocks`` (which
``memhp_default_state=`` sets at boot) and the ``memory_hotplug`` parameters
that steer it are knobs hotplugd sets itself. The backend reports their values
(:func:`.knobs.read_knobs`) and the core's plan judges them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .sysfs import Sysfs
from .udev import find_rules


def kernel_conflicts(sysfs: Sysfs) -> list[str]:
    """``memory_hotplug.memmap_on_memory``: waiting blocks then cost less than hotplugd's memmap estimate."""
    memmap = sysfs.module_param("memmap_on_memory")
    if memmap is not None and memmap not in ("N", "n", "0"):
        return [f"memory_hotplug.memmap_on_memory={memmap}: a hot-added block's memmap lives in the block "
                "itself, so waiting blocks cost less RAM than hotplugd's memmap estimate assumes"]
    return []


def find_conflicts(sysfs: Sysfs, udev_dirs: Iterable[str]) -> list[str]:
    """Every conflict, one message each (kernel settings first, then udev rules by file and line)."""
    return [*kernel_conflicts(sysfs), *(str(hit) for hit in find_rules(udev_dirs))]
