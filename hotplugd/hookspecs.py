"""Every hook hotplugd calls, in one place.

Hooks are synchronous (pluggy has no async hooks: an ``async def`` firstresult
implementation would return a coroutine, which counts as a result and silently
ends the chain). Async work lives in the backend objects that
``hotplugd_register_backends`` registers.

An implementation may accept fewer arguments than its spec names, so specs can
grow without breaking plugins. Implement with ``hotplugd.hookimpl``::

    from hotplugd import hookimpl

    @hookimpl
    def hotplugd_register_backends(registry):
        registry.add("mybackend", MyBackend)

Hooks marked "isolated" are called one implementation at a time by the daemon:
an implementation that raises is logged with its plugin's name and the others,
and the phase, go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .backend import BackendRegistry
    from .config import Config, ConfigProblem
    from .model import Block, BlockReport, PhaseInfo, ZoneRequest
    from .zones import NodeLedger

PROJECT = "hotplugd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    """Register backend factories with ``registry.add(name, factory)``.

    ``factory(options)`` receives the plugin's config table
    (``[plugins.<name>]``, a mapping, possibly empty) and returns a
    :class:`hotplugd.backend.Backend`. Called once per daemon, for every plugin;
    results are ignored. Two plugins registering the same name is a config error.
    """


@hookspec(firstresult=True)
def hotplugd_choose_zone(
    block: Block, requested: ZoneRequest, ledger: NodeLedger, config: Config
) -> ZoneRequest | None:
    """Choose the zone ``block`` should be onlined into. firstresult.

    ``requested`` is what the configured zone policy asks for this block's node
    (``auto``, ``kernel``, ``movable``, or ``auto-movable`` already resolved
    against the node's movable:kernel ratio); ``ledger`` has the node's kernel
    and movable bytes. Return a :class:`ZoneRequest` to decide, or None to pass
    to the next implementation. The built-in one runs last and returns
    ``requested`` narrowed to the block's ``valid_zones``. Isolated: an
    implementation that raises is logged and skipped.
    """


@hookspec
def hotplugd_phase_started(phase: PhaseInfo) -> None:
    """A final phase starts: ``phase.trigger`` says why, ``phase.workers`` maps node to workers.

    Called on the event loop: return quickly. Isolated.
    """


@hookspec
def hotplugd_phase_finished(phase: PhaseInfo, reports: Sequence[BlockReport], seconds: float) -> None:
    """A final phase ended; ``reports`` holds one final report per block it handled. Isolated."""


@hookspec
def hotplugd_block_outcome(report: BlockReport) -> None:
    """One block's final outcome in a phase (after retries). Called per block: keep it cheap.

    Isolated.
    """


@hookspec
def hotplugd_register_collectors(registry: CollectorRegistry) -> None:
    """Register extra Prometheus collectors on the daemon's own (fresh) registry."""


@hookspec
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem] | None:
    """Validate your own table in ``plugins`` (the TOML's ``[plugins.<name>]`` tables).

    Return a list of :class:`hotplugd.config.ConfigProblem` (key, message,
    hint) or None. Called at start, by ``hotplugd check-config`` and on reload;
    any problem refuses the config (exit 78 at start, old config kept on reload).
    """
