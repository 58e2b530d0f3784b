"""pytest fixtures for hotplugd and plugin authors (loaded through the ``pytest11`` entry point).

- ``hotplugd_metrics``: a Metrics on a fresh CollectorRegistry.
- ``hook_recorder``: a HookRecorder.
- ``fake_host`` / ``fake_backend``: a programmable host and its backend (the event injector).
- ``make_daemon``: build a Daemon around a backend with fresh plugin manager and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..backend import Backend
from ..config import Config, from_mapping
from ..hookspecs import hookimpl
from ..metrics import Metrics
from ..notify import Notifier
from ..plugins import make_manager
from .fakehost import FakeBackend, FakeHost
from .recorder import HookRecorder


@pytest.fixture
def hotplugd_metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def hook_recorder() -> HookRecorder:
    return HookRecorder()


@pytest.fixture
def fake_host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def fake_backend(fake_host: FakeHost) -> FakeBackend:
    return FakeBackend(fake_host)


class _Provides:
    """A plugin registering one ready-made backend object under a name."""

    def __init__(self, name: str, backend: Backend) -> None:
        self.name, self.backend = name, backend

    @hookimpl
    def hotplugd_register_backends(self, registry: Any) -> None:
        registry.add(self.name, lambda _options: self.backend)


@pytest.fixture
def make_daemon(hotplugd_metrics: Metrics, hook_recorder: HookRecorder) -> Callable[..., Any]:
    """``make_daemon(backend, config=None, plugins=(), **scheduler_overrides)`` → Daemon.

    The backend is registered as ``"test"``; entry points are not loaded unless
    ``entry_points=True``; the hook recorder is always registered.
    """
    from ..daemon import Daemon

    def build(backend: Backend, config: Config | dict | None = None, plugins: tuple = (),
              entry_points: bool = False, **scheduler: Any) -> Daemon:
        if config is None or isinstance(config, dict):
            data = dict(config or {})
            data.setdefault("backend", "test")
            data.setdefault("metrics", {"enabled": False})
            data.setdefault("scheduler", {}).update(scheduler)
            config = from_mapping(data)
        extra = [("test-backend", _Provides("test", backend)), ("hook-recorder", hook_recorder), *plugins]
        pm = make_manager(config.disabled_plugins, load_entry_points=entry_points, extra=extra)
        return Daemon(config, pm, metrics=hotplugd_metrics, notifier=Notifier({}), serve_metrics=False)

    return build
