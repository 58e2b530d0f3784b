"""Where the kernel's onlining knobs live under a sysfs root.

Standard library only: ``systemd/install.py --uninstall`` loads this file by path
(hotplugd may not be importable by the Python that runs it) to write back the
values hotplugd found first. :data:`KNOB_FILES` lists every knob of
``hotplugd.KNOB_NAMES``, in that order.
"""

from __future__ import annotations

from pathlib import Path

#: Knob name -> its file, relative to the sysfs root. ``auto_online_blocks`` is the memory
#: subsystem's own; the others are parameters of the built-in ``memory_hotplug`` module
#: (``parallel_hotplug_ratio`` only on the seed's kernel, Anolis).
KNOB_FILES = {
    "auto_online_blocks": "devices/system/memory/auto_online_blocks",
    "online_policy": "module/memory_hotplug/parameters/online_policy",
    "auto_movable_ratio": "module/memory_hotplug/parameters/auto_movable_ratio",
    "auto_movable_numa_aware": "module/memory_hotplug/parameters/auto_movable_numa_aware",
    "parallel_hotplug_ratio": "module/memory_hotplug/parameters/parallel_hotplug_ratio",
}


def knob_path(root: str | Path, name: str) -> Path:
    """The file of knob ``name`` under the sysfs ``root``; KeyError for a name that is not a knob."""
    return Path(root) / KNOB_FILES[name]
