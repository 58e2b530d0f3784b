"""The real Daemon over the ``simulated`` plugin, with fresh parts for each run."""

from __future__ import annotations

from typing import Any

import anyio

import hotplugd_simulated
from hotplugd.config import from_mapping
from hotplugd.daemon import Daemon
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import HookRecorder

#: Online calls that cost nothing: the daemon, not the model, is what runs.
#: No costs and no lock (the model of a kernel that onlines in parallel): the engine's bounds alone decide.
FREE = {"cost_fixed": 0, "cost_init_per_page": 0, "cost_free_per_page": 0, "add_interval": 0, "lock": "none"}


def simulated_daemon(table: dict[str, Any], recorder: HookRecorder | None = None, *,
                     zones: dict[str, Any] | None = None, **scheduler: Any) -> Daemon:
    """A Daemon on ``[plugins.simulated]`` = ``table``, its own plugin manager and metrics.

    hotplugd onlines (``scheduler.onliner``, unless given): the simulated kernel has the real knobs,
    and these tests load hotplugd's own engine, not the kernel's onlining."""
    scheduler.setdefault("onliner", "hotplugd")
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False}, "scheduler": scheduler,
                           "zones": zones or {}, "plugins": {"simulated": table}})
    extra: list[tuple[str, object]] = [("simulated", hotplugd_simulated)]
    if recorder is not None:
        extra.append(("recorder", recorder))
    pm = make_manager(load_entry_points=False, extra=extra, environ={})
    return Daemon(config, pm, metrics=Metrics(), notifier=Notifier({}), serve_metrics=False)


async def run_to_the_end(daemon: Daemon, timeout: float = 60) -> None:
    """Until the scenario is played and every queued block had its phase (fails after ``timeout``)."""
    with anyio.fail_after(timeout):
        await daemon.run(until_idle=True)
