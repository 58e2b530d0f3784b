"""hotplugd's ``simulated`` backend: a modelled host with hot-add scenarios, costs, locks and faults.

Registered through the ``hotplugd`` entry-point group like any third-party plugin; it
contributes the ``hotplugd simulate`` command (with ``--from-host``, the what-if) through
``hotplugd_add_commands``, using only hotplugd's public API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotplugd import BackendRegistry, BackendSubject, CommandRegistry, ConfigProblem, HostBackend, hookimpl

from .backend import SimulatedBackend
from .settings import Settings, Step, parse
from .simulate import arguments, command

__all__ = ["Settings", "SimulatedBackend", "Step"]


SUBJECT = BackendSubject("a simulated host, not this machine", "the simulated host", model=True,
                         absent="no memory table: a simulated host exists only inside a running daemon "
                                "(`hotplugd run --backend simulated`, `hotplugd simulate`)")


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add("simulated", SimulatedBackend.from_options,
                 summary="a modelled host with hot-add scenarios, costs, locks and faults", subject=SUBJECT)


@hookimpl(trylast=True)
def hotplugd_host_backend() -> HostBackend:
    """The fallback where no plugin reads this machine: a modelled host, never called this one."""
    return HostBackend("simulated")


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    parse(plugins.get("simulated", {}), problems)
    return problems


@hookimpl
def hotplugd_add_commands(commands: CommandRegistry) -> None:
    commands.add("simulate", command, arguments=arguments,
                 help="play a hot-add scenario on the simulated backend, end to end",
                 description="Play a hot-add scenario on the simulated backend through the real daemon: the plan "
                             "(the simulated kernel has the real knobs), the kernel's or hotplugd's onlining, the "
                             "read-back of every block, one measured time against the serial one. With "
                             "--from-host, predict a hot-add on this host's shape instead (read only) and say "
                             "which parallel_hotplug_ratio to boot with.",
                 exit_status="0: every block online (or removed); 1: a block failed, or was left half-online past "
                             "scheduler.kernel_phase_timeout; 2: usage error; 78: a flag or config is wrong, or "
                             "the plan cannot be honoured")
