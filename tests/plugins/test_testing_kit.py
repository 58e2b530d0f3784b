"""hotplugd.testing as a plugin author meets it: make_daemon by backend name, running(), the recorder, logs."""

from __future__ import annotations

import pytest
import structlog

from hotplugd import BackendRegistry, ConfigError, hookimpl
from hotplugd.observe import logs
from hotplugd.testing import FakeBackend, running, sample


class Provides:
    """A plugin registering a FakeBackend under ``fake``, built from its config table."""

    def __init__(self) -> None:
        self.options: dict | None = None
        self.backend = FakeBackend()

    @hookimpl
    def hotplugd_register_backends(self, registry: BackendRegistry) -> None:
        def factory(options):
            self.options = dict(options)
            return self.backend

        registry.add("fake", factory)


@pytest.mark.asyncio
async def test_make_daemon_builds_a_named_backend_from_its_plugin_and_table(make_daemon, hook_recorder):
    plugin = Provides()
    plugin.backend.host.add(0)
    daemon = make_daemon("fake", plugins=[("fake", plugin)], config={"plugins": {"fake": {"colour": "blue"}}})
    assert daemon.backend is plugin.backend
    assert plugin.options == {"colour": "blue"}
    async with running(daemon):
        plugin.backend.add(1, 2)
        plugin.backend.end()
    assert hook_recorder.outcomes() == {0: "onlined", 1: "onlined", 2: "onlined"}
    assert hook_recorder.names()[0] == "hotplugd_phase_started"
    assert hook_recorder.names()[-1] == "hotplugd_phase_finished"


def test_make_daemon_with_an_unknown_backend_lists_the_installed_ones(make_daemon):
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'; installed backends: fake"):
        make_daemon("nope", plugins=[("fake", Provides())])


def test_make_daemon_ignores_the_developer_s_disabled_plugins_variable(make_daemon, monkeypatch):
    monkeypatch.setenv("HOTPLUGD_DISABLED_PLUGINS", "fake")
    plugin = Provides()
    assert make_daemon("fake", plugins=[("fake", plugin)]).backend is plugin.backend


def test_make_daemon_does_not_change_the_caller_s_config(make_daemon, fake_backend):
    config = {"scheduler": {"settle": 0.5}}
    daemon = make_daemon(fake_backend, config=config, retries=1)
    assert config == {"scheduler": {"settle": 0.5}}
    assert (daemon.config.scheduler.settle, daemon.config.scheduler.retries) == (0.5, 1)


@pytest.mark.asyncio
async def test_running_sees_hot_adds_once_and_cancels_on_error(make_daemon, fake_backend):
    daemon = make_daemon(fake_backend)
    with pytest.raises(ExceptionGroup) as err:
        async with running(daemon):
            fake_backend.add(5)
            raise LookupError("the test failed")
    assert err.group_contains(LookupError)
    assert fake_backend.stopped  # the daemon's shutdown ran


@pytest.mark.asyncio
async def test_hotplugd_logs_captures_the_daemon_s_events(make_daemon, fake_backend, hotplugd_logs):
    fake_backend.end()
    async with running(make_daemon(fake_backend)):
        pass
    events = [e["event"] for e in hotplugd_logs]
    assert events[:3] == ["starting", "plan", "rescan"] and "ready" in events and events[-1] == "stopped"


@pytest.fixture
def configured_at_warning():
    """What an earlier test (or hotplugd simulate) leaves: structlog filtering below warning."""
    logs.configure("warning")
    yield
    structlog.reset_defaults()


def test_hotplugd_logs_sees_info_events_whatever_level_was_configured_before(configured_at_warning, hotplugd_logs):
    structlog.get_logger().info("seen", where="test")
    assert [e["event"] for e in hotplugd_logs] == ["seen"]


def test_hotplugd_metrics_is_fresh_for_every_test(hotplugd_metrics):
    assert sample(hotplugd_metrics, "hotplugd_phases_total", {"trigger": "serial"}) == 0
    hotplugd_metrics.phases.labels("serial").inc()
    assert sample(hotplugd_metrics, "hotplugd_phases_total", {"trigger": "serial"}) == 1


def test_hotplugd_metrics_is_fresh_for_every_test_too(hotplugd_metrics):
    """Same assertion as above: passes only when the first test's increment did not leak."""
    assert sample(hotplugd_metrics, "hotplugd_phases_total", {"trigger": "serial"}) == 0
