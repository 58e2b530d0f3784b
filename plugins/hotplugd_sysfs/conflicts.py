"""Other onliners and settings that change what onlining does: found at start and by ``hotplugd check``."""

from __future__ import annotations

from collections.abc import Iterable

from .sysfs import Sysfs
from .udev import find_rules

#: memory_hotplug module parameters at their mainline defaults.
PARAM_DEFAULTS = {"online_policy": "contig-zones", "auto_movable_ratio": "301", "memmap_on_memory": "N"}


def kernel_conflicts(sysfs: Sysfs) -> list[str]:
    """auto_online_blocks, ``memhp_default_state=`` and the memory_hotplug parameters."""
    found: list[str] = []
    auto = sysfs.auto_online_blocks()
    if auto != "offline":
        found.append(f"the kernel onlines hot-added memory itself: {sysfs.memory_dir / 'auto_online_blocks'} "
                     f"is {auto!r}; hotplugd only verifies and counts (write 'offline' there to let hotplugd online)")
    for word in sysfs.cmdline().split():
        key, _, value = word.partition("=")
        if key == "memhp_default_state" and value != "offline":
            found.append(f"the kernel command line sets memhp_default_state={value}: "
                         "the kernel onlines hot-added memory at boot (use memhp_default_state=offline)")
    policy = sysfs.module_param("online_policy")
    if policy is not None and policy != PARAM_DEFAULTS["online_policy"]:
        ratio = sysfs.module_param("auto_movable_ratio")
        found.append(f"memory_hotplug.online_policy={policy} (auto_movable_ratio={ratio}): the kernel picks "
                     "the zone of every plain 'online' write; hotplugd's zone policy applies only to "
                     "online_kernel/online_movable")
    else:
        ratio = sysfs.module_param("auto_movable_ratio")
        if ratio is not None and ratio != PARAM_DEFAULTS["auto_movable_ratio"]:
            found.append(f"memory_hotplug.auto_movable_ratio={ratio} is set but unused while "
                         f"online_policy={policy or 'contig-zones'}")
    memmap = sysfs.module_param("memmap_on_memory")
    if memmap is not None and memmap not in ("N", "n", "0"):
        found.append(f"memory_hotplug.memmap_on_memory={memmap}: a hot-added block's memmap lives in the block "
                     "itself, so waiting blocks cost less RAM than hotplugd's memmap estimate assumes")
    return found


def find_conflicts(sysfs: Sysfs, udev_dirs: Iterable[str]) -> list[str]:
    """Every conflict, one message each (kernel settings first, then udev rules by file and line)."""
    return [*kernel_conflicts(sysfs), *(str(hit) for hit in find_rules(udev_dirs))]
