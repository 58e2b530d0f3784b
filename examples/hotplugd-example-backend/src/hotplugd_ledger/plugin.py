"""The hook implementations: what the ``hotplugd`` entry point ``ledger`` points at.

hotplugd imports this module, registers it as the plugin ``ledger`` and calls
the functions below; each one names a hook from hotplugd's hookspecs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotplugd import (
    BackendRegistry,
    BackendSubject,
    Block,
    Config,
    ConfigProblem,
    NodeLedger,
    ZoneRequest,
    hookimpl,
)

from .backend import LedgerBackend
from .options import NAME, parse


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add(NAME, LedgerBackend.from_options, summary="a host described by a JSON file, written back as a ledger",
                 subject=subject)


def subject(options: Mapping[str, Any]) -> BackendSubject:
    """What ``hotplugd check`` and ``status`` say this backend onlines, given ``[plugins.ledger]``: a model of a
    host (never this machine), so they read no plan or blocks of it outside a running daemon."""
    return BackendSubject(text=f"the host described by {options.get('host', 'a JSON file')}, written back as a ledger",
                          where="the ledger's host", model=True,
                          absent="no memory table: the ledger's host is read by a running daemon (hotplugd run)")


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    options = parse(plugins.get(NAME, {}), problems)
    if config.backend == NAME and options.host is None and not problems:
        problems.append(ConfigProblem(f"plugins.{NAME}.host", f"required with backend = \"{NAME}\"",
                                      'host = "/path/to/host.json"'))
    return problems


@hookimpl
def hotplugd_choose_zone(block: Block, ledger: NodeLedger, config: Config) -> ZoneRequest | None:
    """Kernel-first: kernel zones until the node has ``kernel_first`` bytes there, then ZONE_MOVABLE.

    Returns None (the next chooser decides) when not configured, or when the
    block cannot join the zone this policy wants.
    """
    floor = parse(config.plugins.get(NAME, {}), []).kernel_first
    if floor is None:
        return None
    want = ZoneRequest.KERNEL if ledger.kernel.get(block.node, 0) < floor else ZoneRequest.MOVABLE
    if block.valid_zones and want.zone_name not in block.valid_zones:
        return None
    return want
