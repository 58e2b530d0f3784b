"""The ledger plugin through a real hotplugd daemon, on the fixtures hotplugd.testing provides.

``make_daemon``, ``hook_recorder``, ``fake_backend`` and ``hotplugd_logs`` come
from hotplugd's pytest plugin, which pytest loads by itself once hotplugd is
installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hotplugd_ledger.plugin
from hotplugd import BackendError, ConfigError, ZoneRequest
from hotplugd.testing import running
from hotplugd_ledger import LedgerBackend

MiB = 1 << 20
PLUGIN = [("ledger", hotplugd_ledger.plugin)]


def write_host(path: Path, blocks: list[dict], hotplug: list[dict] = (), nodes: dict | None = None) -> Path:
    path.write_text(json.dumps({"block_size": "128MiB", "nodes": nodes or {"0": 2, "1": 2},
                                "blocks": blocks, "hotplug": list(hotplug)}))
    return path


def states(path: Path) -> dict[int, tuple[str, str | None]]:
    data = json.loads(path.read_text())
    return {b["index"]: (b["state"], b.get("zone")) for b in data["blocks"]}


def ledger_daemon(make_daemon, host: Path, **table):
    return make_daemon("ledger", plugins=PLUGIN, config={"plugins": {"ledger": {"host": str(host), **table}}})


@pytest.mark.asyncio
async def test_coldplug_and_hotplug_blocks_are_onlined_and_written_back(make_daemon, hook_recorder, tmp_path):
    host = write_host(tmp_path / "host.json",
                      blocks=[{"index": 0, "state": "online", "zone": "Normal"}, {"index": 1}, {"index": 2, "node": 1}],
                      hotplug=[{"index": 3, "node": 1}, {"index": 4}])
    daemon = ledger_daemon(make_daemon, host)
    async with running(daemon):
        pass  # the host file's hotplug list is the event stream; it ends by itself
    assert isinstance(daemon.backend, LedgerBackend)
    assert hook_recorder.outcomes() == {1: "onlined", 2: "onlined", 3: "onlined", 4: "onlined"}
    assert states(host) == {i: ("online", "Normal") for i in range(5)}
    assert json.loads(host.read_text())["hotplug"] == []


@pytest.mark.asyncio
async def test_faults_map_to_hotplugd_outcomes(make_daemon, hook_recorder, tmp_path):
    host = write_host(tmp_path / "host.json", blocks=[
        {"index": 0, "fault": "EBUSY"}, {"index": 1, "fault": "EHWPOISON"}, {"index": 2}])
    daemon = ledger_daemon(make_daemon, host)
    async with running(daemon):
        pass
    reports = {r.block.index: r for r in hook_recorder.reports}
    assert (reports[0].result.outcome, reports[0].attempts) == ("onlined", 2)  # EBUSY once, then the retry
    assert (reports[1].result.outcome, reports[1].result.errno) == ("permanent", 133)
    assert reports[2].result.outcome == "onlined"
    assert states(host)[1] == ("offline", None)


@pytest.mark.asyncio
async def test_kernel_first_policy_fills_kernel_zones_then_movable(make_daemon, tmp_path):
    host = write_host(tmp_path / "host.json", blocks=[{"index": i} for i in range(4)] + [{"index": 4, "node": 1}])
    daemon = ledger_daemon(make_daemon, host, kernel_first="256MiB")
    async with running(daemon):
        pass
    zones = {i: zone for i, (_, zone) in states(host).items()}
    assert zones == {0: "Normal", 1: "Normal", 2: "Movable", 3: "Movable", 4: "Normal"}


@pytest.mark.asyncio
async def test_kernel_first_policy_works_with_any_backend(make_daemon, fake_backend):
    """The policy hook is independent of the ledger backend: here hotplugd's fake host."""
    for index in range(3):
        fake_backend.host.add(index)
    fake_backend.end()
    daemon = make_daemon(fake_backend, plugins=PLUGIN, config={"plugins": {"ledger": {"kernel_first": 128 * MiB}}})
    async with running(daemon):
        pass
    zones = [zone for _, zone in fake_backend.host.calls]
    assert zones == [ZoneRequest.KERNEL, ZoneRequest.MOVABLE, ZoneRequest.MOVABLE]


@pytest.mark.asyncio
async def test_policy_is_off_until_configured(make_daemon, fake_backend):
    fake_backend.host.add(0)
    fake_backend.end()
    daemon = make_daemon(fake_backend, plugins=PLUGIN)
    async with running(daemon):
        pass
    assert fake_backend.host.calls == [(0, ZoneRequest.AUTO)]


def test_bad_table_is_refused_naming_each_key(make_daemon, tmp_path):
    with pytest.raises(ConfigError) as err:
        make_daemon("ledger", plugins=PLUGIN,
                    config={"plugins": {"ledger": {"host": 3, "kernel_first": "lots", "colour": "red"}}})
    message = str(err.value)
    for key in ("plugins.ledger.host", "plugins.ledger.kernel_first", "plugins.ledger.colour"):
        assert key in message


def test_host_is_required_with_the_ledger_backend(make_daemon):
    with pytest.raises(ConfigError, match=r"plugins\.ledger\.host: required with backend = \"ledger\""):
        make_daemon("ledger", plugins=PLUGIN)


@pytest.mark.asyncio
async def test_missing_host_file_is_a_backend_error_naming_it(make_daemon, tmp_path):
    daemon = ledger_daemon(make_daemon, tmp_path / "nope.json")
    with pytest.raises(BackendError, match="nope.json"):
        await daemon.run(until_idle=True)


def test_malformed_host_file_names_the_bad_key(tmp_path):
    from hotplugd_ledger import HostFile

    bad = write_host(tmp_path / "host.json", blocks=[{"index": 0, "fault": "EPERM"}])
    with pytest.raises(BackendError, match=r"blocks\[0\]\.fault: expected one of EBUSY"):
        HostFile.read(bad)


def test_installed_entry_point_provides_the_backend(make_daemon, tmp_path):
    """Loaded the way hotplugd loads it in production: through the ``hotplugd`` entry point."""
    host = write_host(tmp_path / "host.json", blocks=[])
    daemon = make_daemon("ledger", entry_points=True, config={"plugins": {"ledger": {"host": str(host)}}})
    assert isinstance(daemon.backend, LedgerBackend)
    assert daemon.pm.get_plugin("ledger") is hotplugd_ledger.plugin
