"""A plugin can say its zone hook chooses nothing (the kernel keeps the onlining), any plugin receives its own
``[plugins.<name>]`` table, and the daemon's start and stop leave no stale traces (log, ready file)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hotplugd import hookimpl
from hotplugd.commands.check import check
from hotplugd.config import from_mapping, load
from hotplugd.errors import ConfigError
from hotplugd.model import Executor
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import FakeBackend, FakeHost, running
from hotplugd_sysfs import SysfsBackend


class Watcher:
    """Implements the zone hook, declines every block, and says nothing about it."""

    @hookimpl
    def hotplugd_choose_zone(self, block, requested):
        return None


class Audit(Watcher):
    """The same hook, and says whether it chooses (its table's ``enforce``)."""

    @hookimpl
    def hotplugd_chooses_zones(self, config):
        return bool(config.plugins.get("audit", {}).get("enforce", False))


class TableReader:
    """An observer: no config hook but ``hotplugd_configure``."""

    def __init__(self) -> None:
        self.tables: list[dict] = []

    @hookimpl
    def hotplugd_configure(self, table):
        self.tables.append(dict(table))


def sysfs_check(fake, plugin, table: dict | None = None) -> tuple[int, str]:
    config = from_mapping({"backend": "sysfs", "plugins": {"sysfs": fake.options(), **(table or {})}})
    hooks = Hooks(make_manager(load_entry_points=False, environ={}, extra=[("audit", plugin)]))
    out = io.StringIO()
    code = check(config, hooks, SysfsBackend.from_options(fake.options(), io=fake.io), out)
    return code, out.getvalue()


def test_a_zone_hook_takes_the_onlining_from_the_kernel_and_check_says_so(fake_sysfs):
    code, out = sysfs_check(fake_sysfs, Watcher())
    assert code == 0
    assert "plan (host): hotplugd onlines" in out and "plugin audit chooses zones" in out
    assert "zones: plugin audit chooses them (hotplugd_choose_zone), which takes the onlining from the kernel" in out


def test_a_plugin_that_chooses_no_zones_leaves_the_onlining_to_the_kernel(fake_sysfs):
    code, out = sysfs_check(fake_sysfs, Audit(), {"audit": {"enforce": False}})
    assert code == 0
    assert "plan (host): the kernel onlines" in out
    assert "zones: plugin audit implements hotplugd_choose_zone but chooses none" in out
    _, enforcing = sysfs_check(fake_sysfs, Audit(), {"audit": {"enforce": True}})
    assert "plan (host): hotplugd onlines" in enforcing


@pytest.mark.asyncio
async def test_the_daemons_plan_asks_the_plugin_too(fake_sysfs, make_daemon):
    backend = SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)
    daemon = make_daemon(backend, {"plugins": {"audit": {"enforce": False}}}, plugins=[("audit", Audit())])
    assert (await daemon.make_plan(daemon.config)).executor is Executor.KERNEL
    daemon = make_daemon(backend, {"plugins": {"audit": {"enforce": True}}}, plugins=[("audit", Audit())])
    assert (await daemon.make_plan(daemon.config)).executor is Executor.HOTPLUGD


@pytest.mark.asyncio
async def test_an_observer_receives_its_own_table_at_start_and_on_reload(tmp_path: Path, make_daemon):
    path = tmp_path / "hotplugd.toml"
    base = 'backend = "test"\n[metrics]\nenabled = false\n'
    path.write_text(base + "[plugins.slowlog]\nthreshold = 2\n")
    path.chmod(0o644)
    reader = TableReader()
    daemon = make_daemon(FakeBackend(FakeHost({0: 4})), load(path), plugins=[("slowlog", reader)])
    assert reader.tables == [{"threshold": 2}]
    async with running(daemon, until_idle=False):
        path.write_text(base + "[plugins.slowlog]\nthreshold = 5\n")
        assert await daemon.reload()
    assert reader.tables == [{"threshold": 2}, {"threshold": 5}]


@pytest.mark.asyncio
async def test_the_ready_file_is_removed_at_exit(tmp_path: Path, make_daemon):
    daemon = make_daemon(FakeBackend(FakeHost({0: 4})))
    daemon.ready_file = tmp_path / "ready"
    async with running(daemon, until_idle=False):
        assert daemon.ready_file.read_text().strip().isdigit()
    assert not daemon.ready_file.exists()


@pytest.mark.asyncio
async def test_a_refused_start_logs_its_start_before_stopped(make_daemon, hotplugd_logs):
    daemon = make_daemon(FakeBackend(FakeHost({0: 4})), {"scheduler": {"onliner": "kernel"}})
    with pytest.raises(ConfigError, match="cannot be honoured"):
        await daemon.run()
    events = [e["event"] for e in hotplugd_logs]
    assert events[0] == "starting" and events[-1] == "stopped" and "ready" not in events
