"""``hotplugd check``: the plan for this host, and whatever else onlines memory against it.

Prints who onlines (the kernel's own auto-online, set up by hotplugd, or hotplugd
itself), why, and the kernel's knobs as they read and as the plan would set them;
then what the backend manages (:meth:`Backend.inventory`: a hypervisor backend's guests), then what
would compete with the plan (udev rules that online memory, a knob the
plan needs but cannot write), one line each. Exit 0 when there is none, 1 otherwise.
Reads only: it never starts the backend (no socket, no write).
"""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from hotplugd.commands.plan_text import plan_lines, read_plan
from hotplugd.config import Config
from hotplugd.engine.plan import Plan
from hotplugd.plugin.backend import Backend
from hotplugd.plugin.hooks import Hooks

EXIT_CLEAN = 0
EXIT_CONFLICTS = 1


def check(config: Config, hooks: Hooks, backend: Backend, out: TextIO | None = None) -> int:
    """Print the plan (who onlines, why, the knobs) and every conflict; the exit code says whether there was any."""
    stream = out or sys.stdout
    name = config.backend

    async def gather() -> tuple[Plan, list[str], list[str]]:
        plan = await read_plan(config, hooks, backend)
        conflicts = [*await backend.conflicts(), *plan.conflicts()]
        return plan, conflicts, await backend.inventory()

    plan, conflicts, inventory = anyio.run(gather)
    for line in [*plan_lines(plan), *inventory]:
        print(line, file=stream)
    if not conflicts:
        print(f"no conflicts: nothing else onlines memory on this host against the plan (backend {name})",
              file=stream)
        return EXIT_CLEAN
    print(f"{len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''} (backend {name}):", file=stream)
    for message in conflicts:
        print(f"- {message}", file=stream)
    return EXIT_CONFLICTS
