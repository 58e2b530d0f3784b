"""Plugin bugs at start-up become errors naming the plugin; a bad zone answer is skipped."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from hotplugd import BackendError, ConfigError, PluginError, ZoneRequest, hookimpl
from hotplugd.config import Config
from hotplugd.plugin.backend import BackendRegistry
from hotplugd.plugin.manager import make_manager
from hotplugd.plugin.validation import check_plugin_config
from hotplugd.testing import FakeBackend, FakeHost

pytestmark = pytest.mark.asyncio


class RaisingCheck:
    @hookimpl
    def hotplugd_check_config(self, plugins):
        raise KeyError("oops")


async def test_a_raising_config_check_names_its_plugin():
    pm = make_manager(load_entry_points=False, extra=[("checker", RaisingCheck())])
    with pytest.raises(PluginError, match="plugin 'checker' failed in hotplugd_check_config: KeyError"):
        check_plugin_config(pm, Config())


def _broken_factory(options):
    raise RuntimeError("no device")


def _picky_factory(options):
    raise ValueError("nodes must be positive")


@pytest.mark.parametrize(("factory", "error", "text"), [
    (_broken_factory, BackendError, "backend 'x' (plugin 'p') failed to start: RuntimeError: no device"),
    (_picky_factory, ConfigError, "backend 'x' refused its options [plugins.x]: nodes must be positive"),
])
async def test_a_raising_backend_factory_is_an_error_not_a_traceback(factory, error, text):
    registry = BackendRegistry()
    registry._registering_for("p")
    registry.add("x", factory)
    with pytest.raises(error) as info:
        registry.build("x", {})
    assert text in str(info.value)


class WrongAnswer:
    @hookimpl
    def hotplugd_choose_zone(self, block):
        return "online_movable"  # a string, not a ZoneRequest


async def test_a_zone_answer_of_the_wrong_type_is_logged_and_skipped(make_daemon):
    host = FakeHost()
    backend = FakeBackend(host)
    daemon = make_daemon(backend, {"zones": {"policy": "movable"}}, plugins=(("wrong", WrongAnswer()),))
    block = host.add(1, zones=("Normal",))  # movable is not possible here: the built-in narrows it
    from hotplugd.model import Action, BlockEvent

    backend.inject(BlockEvent(Action.ADD, 1, block))
    backend.end()
    with capture_logs() as logs:
        await daemon.run(until_idle=True)
    assert host.calls == [(1, ZoneRequest.KERNEL)]
    bad = [e for e in logs if e["event"] == "hook_bad_result"]
    assert bad and bad[0]["plugin"] == "wrong"
