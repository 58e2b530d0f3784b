"""``hotplugd check``: the pre-flight. The plan for the backend's host, and whatever would stop it.

Its first line names the backend and what it describes (this host, the guests,
or a simulated host: never called "this host"). Then who onlines (the kernel's
own auto-online, set up by hotplugd, or hotplugd itself), why, the kernel's
knobs as they read and as the plan would set them, and which plugin's zone hook
takes the onlining from the kernel; what the backend manages
(:meth:`Backend.inventory`: a hypervisor backend's guests); then what `run`
would refuse, what cannot be known (a guest that does not answer) and what
would compete with the plan (udev rules that online memory, a knob the plan
needs but cannot write).
Reads only: it never starts the backend (no socket, no write).

Exit 0: nothing in the way; 1: conflicts, or something it cannot know;
78: `run` would refuse this config (the reason is printed).
"""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from hotplugd.commands.plan_text import plan_lines, read_plan, subject_line
from hotplugd.config import Config
from hotplugd.engine.plan import Plan, refuse_forced_kernel
from hotplugd.errors import EXIT_CONFIG
from hotplugd.plugin.backend import Backend
from hotplugd.plugin.hooks import Hooks

EXIT_CLEAN = 0
EXIT_CONFLICTS = 1
EXIT_REFUSED = EXIT_CONFIG


def zone_hook_lines(config: Config, hooks: Hooks) -> list[str]:
    """Which plugins' ``hotplugd_choose_zone`` take the onlining from the kernel, and which say they choose none."""
    choosers = hooks.zone_choosers(config)
    declined = [name for name in hooks.zone_hooks() if name not in choosers]
    lines = []
    if choosers:
        lines.append(f"  zones: plugin {', '.join(choosers)} chooses them (hotplugd_choose_zone), which takes the "
                     "onlining from the kernel: hotplugd onlines every block so the hook sees each (a plugin that "
                     "only watches returns False from hotplugd_chooses_zones)")
    if declined:
        lines.append(f"  zones: plugin {', '.join(declined)} implements hotplugd_choose_zone but chooses none "
                     "under this config (hotplugd_chooses_zones): the onlining stays the plan's")
    return lines


def check(config: Config, hooks: Hooks, backend: Backend, out: TextIO | None = None, *, note: str = "") -> int:
    """Print the plan and everything in its way; the exit code says the worst of it."""
    stream = out or sys.stdout
    name = config.backend
    subject = hooks.backend_subject(name, config.plugins.get(name, {}))

    async def gather() -> tuple[Plan, list[str], list[str], list[str]]:
        plan = await read_plan(config, hooks, backend)
        conflicts = [*await backend.conflicts(), *plan.conflicts()]
        return plan, conflicts, await backend.inventory(), await backend.unknowns()

    plan, conflicts, inventory, unknowns = anyio.run(gather)
    print(f"backend {name}: {subject_line(subject, backend)}{note}", file=stream)
    for line in [*plan_lines(plan), *zone_hook_lines(config, hooks), *inventory]:
        print(line, file=stream)
    refused = refuse_forced_kernel(config, plan)
    if refused is not None:
        print(f"run would refuse (exit 78): scheduler.onliner = \"kernel\" cannot be honoured: {refused}",
              file=stream)
    for message in unknowns:
        print(f"cannot know: {message}", file=stream)
    if conflicts:
        print(f"{len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''} (backend {name}):", file=stream)
        for message in conflicts:
            print(f"- {message}", file=stream)
    elif not unknowns:
        print(f"no conflicts: nothing else onlines memory on {subject.where} against the plan (backend {name})",
              file=stream)
    if refused is not None:
        return EXIT_REFUSED
    return EXIT_CONFLICTS if conflicts or unknowns else EXIT_CLEAN
