"""The plan as ``hotplugd check`` and ``hotplugd status`` print it: who onlines, why, and the knobs."""

from __future__ import annotations

from hotplugd.config import Config
from hotplugd.engine.plan import Plan, make_plan
from hotplugd.model import HOST_DOMAIN, KNOB_NAMES, Executor
from hotplugd.plugin.backend import Backend, BackendSubject
from hotplugd.plugin.hooks import Hooks

_WHO = {Executor.KERNEL: "the kernel onlines (its own auto-online, set up by hotplugd; hotplugd verifies each block)",
        Executor.HOTPLUGD: "hotplugd onlines (the kernel's auto-online kept off)"}


def subject_line(subject: BackendSubject, backend: Backend) -> str:
    """What the backend describes, for the first line of ``check`` and ``status`` (its plugin's words,
    :class:`BackendSubject`; a model's with the modelled host's own description after them)."""
    if subject.model and subject.text:
        return f"{subject.text}: {backend.describe()}"
    return subject.text or backend.describe()


async def read_plan(config: Config, hooks: Hooks, backend: Backend) -> Plan:
    """The host's plan for ``config``, from the knobs as they read now (nothing is written)."""
    knobs = await backend.kernel_knobs(HOST_DOMAIN)
    return make_plan(config, knobs, concurrency=backend.domain_concurrency(HOST_DOMAIN),
                     zone_choosers=hooks.zone_choosers(config), sources=await backend.memory_sources(HOST_DOMAIN))


def plan_lines(plan: Plan) -> list[str]:
    """The plan, its reason and each knob: what it reads, and what the plan sets it to."""
    lines = [f"plan (host): {_WHO[plan.executor]}", f"  why: {plan.reason}"]
    if plan.found is None:
        return lines
    for name in KNOB_NAMES:
        now = plan.found.get(name)
        if now is None:
            continue
        wanted = plan.knobs.get(name)
        if wanted is None or wanted == now:
            note = "" if wanted is None else " (as the plan wants)"
        else:
            note = f" -> {wanted}" + (" (read-only: cannot be set)" if not plan.found.writable(name) else "")
        lines.append(f"  {name} = {now}{note}")
    if plan.executor is Executor.KERNEL:
        lines.append("  these knobs are global: memory the dax kmem driver adds (CXL, pmem as system-ram) follows "
                     "them too, and daxctl reconfigure-device refuses to run while the kernel auto-onlines "
                     "(unless forced)")
    return lines
