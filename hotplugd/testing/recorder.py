"""A plugin that records every observer hook call, for assertions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hotplugd.model import BlockReport, PhaseInfo
from hotplugd.plugin.spec import hookimpl


class HookRecorder:
    """Register with ``pm.register(recorder)``; read ``calls``, ``phases`` and ``reports``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.phases: list[PhaseInfo] = []
        self.reports: list[BlockReport] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @hookimpl
    def hotplugd_phase_started(self, phase: PhaseInfo) -> None:
        self.calls.append(("hotplugd_phase_started", {"phase": phase}))
        self.phases.append(phase)

    @hookimpl
    def hotplugd_phase_finished(self, phase: PhaseInfo, reports: Sequence[BlockReport], seconds: float) -> None:
        self.calls.append(("hotplugd_phase_finished", {"phase": phase, "reports": list(reports), "seconds": seconds}))

    @hookimpl
    def hotplugd_block_outcome(self, report: BlockReport) -> None:
        self.calls.append(("hotplugd_block_outcome", {"report": report}))
        self.reports.append(report)

    def outcomes(self) -> dict[int, str]:
        """Block index → final outcome value."""
        return {r.block.index: r.result.outcome.value for r in self.reports}

    def triggers(self) -> list[str]:
        return [p.trigger for p in self.phases]
