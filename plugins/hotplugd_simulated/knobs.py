"""The simulated kernel's onlining knobs, as a real kernel has them (what the plan reads and writes).

``auto_online_blocks`` says whether, and into which zone, the kernel onlines the blocks
it adds; ``online_policy`` and ``auto_movable_ratio`` how it picks the zone of a plain
``online``; the seed's kernel (anolis) also has ``parallel_hotplug_ratio``, the percent
of a node's CPUs its deferred phase uses (0: no deferral). The values are spelled as
sysfs spells them and checked as the kernel checks a write (EINVAL: a BackendError
naming the knob); the per-block kernel (the seed's first attempt) has the same ratio knob.
``read_only_knobs`` models a read-only /sys (a container, a unit
without the exception to ``ProtectKernelTunables=``).
"""

from __future__ import annotations

from collections.abc import Mapping

from hotplugd import KNOB_NAMES, BackendError, KernelKnobs

AUTO_ONLINE = ("offline", "online", "online_kernel", "online_movable")
POLICIES = ("contig-zones", "auto-movable")
#: Linux's defaults (mm/memory_hotplug.c): contig-zones, a movable:kernel ratio of 301 %, NUMA aware.
DEFAULTS = {"online_policy": "contig-zones", "auto_movable_ratio": "301", "auto_movable_numa_aware": "Y"}


def _percent(value: str, top: int | None) -> bool:
    return value.isdigit() and (top is None or int(value) <= top)


#: What the kernel accepts for each knob (anything else: EINVAL).
VALID = {
    "auto_online_blocks": lambda v: v in AUTO_ONLINE,
    "online_policy": lambda v: v in POLICIES,
    "auto_movable_ratio": lambda v: _percent(v, None),
    "auto_movable_numa_aware": lambda v: v in ("Y", "N", "1", "0"),
    "parallel_hotplug_ratio": lambda v: _percent(v, 100),
}


class Knobs:
    """One simulated kernel's knobs: read by the plan, written by the daemon, obeyed by the host."""

    def __init__(self, kernel: str, auto_online: bool, kernel_ratio: int, read_only: frozenset[str]) -> None:
        self.values = {"auto_online_blocks": "online" if auto_online else "offline", **DEFAULTS}
        if kernel in ("anolis", "per-block"):  # the seed's kernels: their own parallelism, a knob
            self.values["parallel_hotplug_ratio"] = str(kernel_ratio)
        self.read_only = read_only & set(self.values)
        #: The per-block kernel's own ratio (not a knob hotplugd knows: fixed at boot).
        self.boot_ratio = kernel_ratio

    def __repr__(self) -> str:
        return f"<Knobs {self.values}>"

    def read(self) -> KernelKnobs:
        return KernelKnobs(dict(self.values), frozenset(self.read_only))

    def write(self, values: Mapping[str, str]) -> None:
        """Write each knob in order, as sysfs would: the first refused one raises, naming it."""
        for name, value in values.items():
            if name not in KNOB_NAMES or name not in self.values:
                raise BackendError(f"the simulated kernel has no knob {name!r}",
                                   hint=f"its knobs: {', '.join(self.values)}")
            if name in self.read_only:
                raise BackendError(f"cannot write {value!r} to {name}: EROFS (read_only_knobs)")
            if not VALID[name](str(value)):
                raise BackendError(f"cannot write {value!r} to {name}: EINVAL")
            self.values[name] = str(value)

    @property
    def kernel_onlines(self) -> bool:
        return self.values["auto_online_blocks"] != "offline"

    @property
    def ratio(self) -> int:
        """The kernel's own parallel ratio, percent: the knob on anolis, the boot value elsewhere."""
        return int(self.values.get("parallel_hotplug_ratio", self.boot_ratio))

    def zone(self, node_kernel: int, node_movable: int, size: int) -> str:
        """The zone the kernel's own onlining puts a block in, by ``auto_online_blocks`` and the policy.

        ``node_kernel`` and ``node_movable``: bytes the block's node has online in each.
        """
        mode = self.values["auto_online_blocks"]
        if mode == "online_movable":
            return "Movable"
        if mode == "online_kernel" or self.values["online_policy"] != "auto-movable":
            return "Normal"  # contig-zones: a hot-added range next to Normal memory joins Normal
        ratio = int(self.values["auto_movable_ratio"])
        return "Movable" if (node_movable + size) * 100 <= ratio * node_kernel else "Normal"
