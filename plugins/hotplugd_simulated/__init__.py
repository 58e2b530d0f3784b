"""hotplugd's ``simulated`` backend: a modelled host with hot-add scenarios, costs, locks and faults.

Registered through the ``hotplugd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotplugd import BackendRegistry, ConfigProblem, hookimpl

from .backend import SimulatedBackend
from .settings import Settings, Step, parse

__all__ = ["Settings", "SimulatedBackend", "Step"]


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add("simulated", SimulatedBackend.from_options,
                 summary="a modelled host with hot-add scenarios, costs, locks and faults")


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    parse(plugins.get("simulated", {}), problems)
    return problems
