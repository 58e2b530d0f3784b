"""pytest fixtures for hotplugd and plugin authors (opt-in: ``pytest -p hotplugd.testing.pytest_plugin``,
or ``pytest_plugins = ["hotplugd.testing.pytest_plugin"]`` in a top-level conftest.py).

- ``hotplugd_metrics``: a Metrics on a fresh CollectorRegistry.
- ``hook_recorder``: a HookRecorder.
- ``hotplugd_logs``: the structlog events logged during the test.
- ``fake_host`` / ``fake_backend``: a programmable host and its backend (the event injector).
- ``make_daemon``: build a Daemon around a backend with fresh plugin manager and metrics;
  drive it with ``async with hotplugd.testing.running(daemon):``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from hotplugd.config import Config, from_mapping
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.backend import Backend
from hotplugd.plugin.manager import make_manager
from hotplugd.plugin.spec import hookimpl
from hotplugd.testing.fakehost import FakeBackend, FakeHost
from hotplugd.testing.recorder import HookRecorder


@pytest.fixture
def hotplugd_metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def hook_recorder() -> HookRecorder:
    return HookRecorder()


@pytest.fixture
def hotplugd_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event logged during the test, as dicts (``event``, ``plugin``, ``hook``, ...).

    Whatever level an earlier ``logs.configure`` filtered at: structlog 25.3 (Debian 13's)
    ``capture_logs`` replaces the processors only, so a level filter left by a previous test
    would drop the events before they are captured.
    """
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


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
def make_daemon(hotplugd_metrics: Metrics, hook_recorder: HookRecorder, tmp_path: Path) -> Callable[..., Any]:
    """``make_daemon(backend, config=None, plugins=(), **scheduler_overrides)`` → Daemon.

    ``backend`` is a Backend object (registered as ``"test"``), or the name of
    a backend that a plugin registers: pass that plugin in ``plugins`` as
    ``(name, module_or_object)`` pairs, or ``entry_points=True`` to load the
    installed ones (not loaded otherwise). ``config`` is a Config or a mapping
    shaped like the TOML (e.g. ``{"plugins": {"ledger": {...}}}``); metrics
    serving is off, and the state directory (the kernel's knobs as found) is
    the test's own. The hook recorder is always registered. ``clock``
    replaces the scheduler's monotonic clock (see ``ManualClock``).
    """
    from hotplugd.daemon import Daemon

    def build(backend: Backend | str, config: Config | dict | None = None, plugins: Iterable[tuple[str, object]] = (),
              entry_points: bool = False, clock: Callable[[], float] | None = None, **scheduler: Any) -> Daemon:
        name = backend if isinstance(backend, str) else "test"
        if config is None or isinstance(config, dict):
            data = dict(config or {})
            data.setdefault("backend", name)
            data.setdefault("metrics", {"enabled": False})
            data.setdefault("state_directory", str(tmp_path / "state"))
            data["scheduler"] = {**data.get("scheduler", {}), **scheduler}
            config = from_mapping(data)
        provides = [] if isinstance(backend, str) else [("test-backend", _Provides(name, backend))]
        extra = [*provides, ("hook-recorder", hook_recorder), *plugins]
        # environ={}: the developer's HOTPLUGD_DISABLED_PLUGINS must not change a test's outcome
        pm = make_manager(config.disabled_plugins, load_entry_points=entry_points, extra=extra, environ={})
        extra_kw = {"clock": clock} if clock is not None else {}
        return Daemon(config, pm, metrics=hotplugd_metrics, notifier=Notifier({}), serve_metrics=False, **extra_kw)

    return build
