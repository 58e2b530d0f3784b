"""What every part of the engine needs, in one object: built once by the daemon, shared by reference."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hotplugd.config import Config
from hotplugd.observe.metrics import Metrics
from hotplugd.plugin.backend import Backend
from hotplugd.plugin.hooks import Hooks


@dataclass(frozen=True, eq=False)
class EngineContext:
    """The config (the daemon's one object: a reload changes its sections in place), the plugins'
    hooks, the backend, the metrics and the monotonic clock (a manual one in tests)."""

    config: Config
    hooks: Hooks
    backend: Backend
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"<EngineContext backend={type(self.backend).__name__} config={self.config.source}>"
