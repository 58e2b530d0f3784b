"""The plan: who onlines a domain's added blocks, the kernel's own auto-online or hotplugd.

The kernel onlines fastest (no user-space loop beats it on its own ground), and its
memory-hotplug maintainers recommend exactly this: user space sets the policy,
the kernel onlines. hotplugd then sets the knobs and proves every block. It onlines
itself only where the kernel cannot express the policy or cannot be told:

- different zone policies or ratios on different nodes, or for dax devices' memory than for
  the rest (the knobs are global: memory the kmem driver adds follows them too);
- a plugin's ``hotplugd_choose_zone`` that decides instead of the built-in;
- a backend that really onlines more than one block at once (hotplugd's parallel
  final phase), unless the kernel has its own (the seed's ``parallel_hotplug_ratio``);
- ``scheduler.defer = "always"``;
- the knobs missing or not writable (an old kernel, a read-only /sys).

Pure: the daemon reads the knobs, asks for a plan, records what it found and writes
:meth:`Plan.changes`; ``hotplugd check`` prints the same plan without writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hotplugd.config import Config
from hotplugd.model import Executor, KernelKnobs

#: The knobs that make the kernel carry out each zone policy (``auto-movable`` adds its ratio).
POLICY_KNOBS: dict[str, dict[str, str]] = {
    "auto": {"auto_online_blocks": "online", "online_policy": "contig-zones"},
    "kernel": {"auto_online_blocks": "online_kernel"},
    "movable": {"auto_online_blocks": "online_movable"},
    "auto-movable": {"auto_online_blocks": "online", "online_policy": "auto-movable"},
}
#: hotplugd onlines: the kernel's own auto-online stays off.
HOTPLUGD_KNOBS = {"auto_online_blocks": "offline"}
#: The seed's kernel's knob: percent of a node's CPUs.
ANOLIS_RATIO = "parallel_hotplug_ratio"


def kernel_percent(ratio: float) -> int:
    """hotplugd's workers per CPU as the seed's kernel's percent of a node's CPUs (0 to 100)."""
    return min(100, round(ratio * 100))


@dataclass(frozen=True)
class Plan:
    """Who onlines, why, and what the kernel's knobs must read for it."""

    executor: Executor
    reason: str
    #: Knob name -> the value it must read (written where it reads otherwise).
    knobs: dict[str, str] = field(default_factory=dict)
    #: The knobs as read before the plan (None: the backend cannot direct its kernel).
    found: KernelKnobs | None = None

    def __repr__(self) -> str:
        return f"<Plan {self.executor} ({self.reason})>"

    def changes(self) -> dict[str, str]:
        """The knobs to write: those that exist and read otherwise, in the order they must be written
        (``auto_online_blocks`` last when it turns the kernel's onlining on, first when it turns it off)."""
        if self.found is None:
            return {}
        wanted = {k: v for k, v in self.knobs.items() if k in self.found.values and self.found.get(k) != v}
        first = "auto_online_blocks"
        if first in wanted and wanted[first] != "offline":
            wanted[first] = wanted.pop(first)  # the policy is in place before the kernel starts onlining
        elif first in wanted:
            wanted = {first: wanted.pop(first), **wanted}
        return wanted

    def conflicts(self) -> list[str]:
        """The kernel's auto-online as a conflict: only where it contradicts the plan and will stay so
        (a read-only knob hotplugd did not set and would not set)."""
        if self.found is None:
            return []
        return [f"the kernel's {name} reads {self.found.get(name)!r} and cannot be written; the plan needs {value!r}"
                for name, value in self.changes().items() if not self.found.writable(name)]


def make_plan(config: Config, knobs: KernelKnobs | None, *, concurrency: int = 1,
              zone_choosers: Sequence[str] = (), sources: Sequence[str] = ()) -> Plan:
    """The plan for one domain from the config, its kernel's knobs, what the plugins do and the
    devices (``sources``: dax devices the config converts) whose memory follows the same knobs."""
    sched, zones = config.scheduler, config.zones
    anolis = knobs is not None and ANOLIS_RATIO in knobs.values
    off = dict(HOTPLUGD_KNOBS, **({ANOLIS_RATIO: "0"} if anolis else {}))

    def hotplugd(reason: str) -> Plan:
        return Plan(Executor.HOTPLUGD, reason, off if knobs is not None else {}, knobs)

    if sched.onliner == "hotplugd":
        return hotplugd("scheduler.onliner = \"hotplugd\"")
    if knobs is None:
        return hotplugd("this backend cannot direct its kernel's onlining")
    if "auto_online_blocks" not in knobs.values:
        return hotplugd("the kernel has no auto_online_blocks (too old to be directed)")
    dax = zones.dax
    if sources and (dax.policy, dax.auto_movable_ratio) != (zones.policy, zones.auto_movable_ratio):
        return hotplugd(f"dax devices ({', '.join(sorted(sources))}) want {dax.policy!r}, other memory "
                        f"{zones.policy!r}; the kernel's knobs are global")
    if zones.nodes and any((n.policy, n.auto_movable_ratio) != (zones.policy, zones.auto_movable_ratio)
                           for n in zones.nodes.values()):
        differing = ", ".join(f"node {k}: {n.policy}" for k, n in sorted(zones.nodes.items()))
        return hotplugd(f"zone policies differ per node ({differing}); the kernel's knobs are global")
    if zone_choosers:
        return hotplugd(f"plugin {', '.join(sorted(zone_choosers))} chooses zones (hotplugd_choose_zone)")
    if sched.defer == "always":
        return hotplugd("scheduler.defer = \"always\"")
    if concurrency > 1 and sched.parallel_hotplug_ratio > 0 and not anolis:
        return hotplugd(f"the backend onlines {concurrency} blocks at once: hotplugd's parallel final phase")
    wanted = dict(POLICY_KNOBS[zones.policy])
    if zones.policy == "auto-movable":
        wanted["auto_movable_ratio"] = str(zones.auto_movable_ratio)
    if anolis:
        wanted[ANOLIS_RATIO] = str(kernel_percent(sched.parallel_hotplug_ratio))
    missing = sorted(k for k in wanted if k not in knobs.values)
    if missing:
        return hotplugd(f"the kernel lacks {', '.join(missing)} (the zone policy {zones.policy!r} needs it)")
    stuck = sorted(k for k, v in wanted.items() if knobs.get(k) != v and not knobs.writable(k))
    if stuck:
        return hotplugd(f"{', '.join(stuck)} cannot be written (read-only)")
    how = f"zone policy {zones.policy!r}" + (f", parallel_hotplug_ratio {wanted[ANOLIS_RATIO]} %" if anolis else "")
    return Plan(Executor.KERNEL, f"the kernel's knobs express the {how}", wanted, knobs)


def refuse_forced_kernel(config: Config, plan: Plan) -> str | None:
    """Why ``scheduler.onliner = "kernel"`` cannot be honoured (None: it can, or was not asked for)."""
    if config.scheduler.onliner == "kernel" and plan.executor is not Executor.KERNEL:
        return plan.reason
    return None
