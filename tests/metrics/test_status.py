"""``hotplugd status``: the census table, and the daemon's view read from its live endpoint."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import socket

import anyio
import pytest
from prometheus_client import generate_latest
from rich.console import Console

from hotplugd.commands import cli
from hotplugd.commands.status import (
    EXIT_NOT_RUNNING,
    DaemonView,
    census_rows,
    endpoint,
    status,
)
from hotplugd.config import Config, MetricsConfig
from hotplugd.config import load as cfgload
from hotplugd.model import Block, PhaseInfo, State, Trigger
from hotplugd.observe.metrics import Metrics
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import build_backend, make_manager
from hotplugd.testing import sample
from hotplugd.units import format_bytes

from .live import BLOCK, live_daemon, simulated_config

TRIGGERS = [t.value for t in Trigger]


def render(config: Config) -> tuple[int, str]:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    pm = make_manager(config.disabled_plugins)
    code = status(config, build_backend(pm, config), console, hooks=Hooks(pm))  # as `hotplugd status` does
    return code, console.file.getvalue()


def cell(out: str, label: str) -> list[str]:
    """The cells right of ``label`` in the row of a rich table that starts with it."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{out}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once closed


@pytest.mark.asyncio
async def test_status_shows_the_running_daemons_view():
    config = simulated_config((0, 2 << 30), (1, 1 << 30))
    async with live_daemon(config, blocks=24) as daemon:
        host, port = daemon.metrics_server.address
        asking = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, port=port))
        code, out = await anyio.to_thread.run_sync(render, asking)
        last = daemon.scheduler.last_phase.info
        phases = {t: int(sample(daemon.metrics, "hotplugd_phases_total", {"trigger": t})) for t in TRIGGERS}
    assert code == 0, out
    assert f"daemon on {host}:{port}" in out and "backend simulated" in out
    assert cell(out, "onlined") == ["24 blocks by hotplugd, 0 by the kernel (verified)"]
    assert cell(out, "pending") == ["0 blocks, 0 B"]
    assert cell(out, "failed") == ["0 blocks offline after errors; outcomes: none"]
    assert cell(out, "phases by trigger") == [", ".join(f"{t}: {n}" for t, n in sorted(phases.items()) if n)]
    assert cell(out, "last phase")[0].startswith(f"{last.blocks} blocks, {format_bytes(last.bytes)} in ")
    assert cell(out, "rescans") == ["start: 1"]
    # The memory table is the running daemon's, from its metrics: 1 GiB booted on each node and the 3 GiB
    # the scenario hot-added (never a fresh simulated host of 2 GiB built by the command itself).
    assert out.startswith("backend simulated: a simulated host, not this machine")
    assert f"memory blocks (the daemon's, from its metrics on {host}:{port})" in out
    assert cell(out, "0") == ["Normal", "online", "24", "3.0 GiB"]
    assert cell(out, "1") == ["Normal", "online", "16", "2.0 GiB"]
    assert cell(out, "all") == ["", "", "40", "5.0 GiB"]
    assert "this host" not in out


def test_status_says_when_the_daemon_is_not_running():
    port = closed_port()
    config = simulated_config((0, 1 << 30), extra=[f"metrics.port={port}"])
    code, out = render(config)
    assert code == EXIT_NOT_RUNNING
    assert f"daemon not running (no answer on 127.0.0.1:{port})" in out
    # A simulated host exists only inside a daemon: no table of one the command would build itself.
    assert "memory blocks" not in out and "a simulated host exists only inside a running daemon" in out


def test_status_from_the_command_line(capsys):
    port = closed_port()
    code = cli.main(["status", "--backend", "simulated", "--set", f"metrics.port={port}",
                     "--set", "plugins.simulated.nodes=1", "--set", 'plugins.simulated.boot_memory="512MiB"'])
    out = capsys.readouterr().out
    assert code == EXIT_NOT_RUNNING
    assert out.startswith("backend simulated: a simulated host, not this machine")
    assert "daemon not running" in out and "512.0 MiB" not in out


def test_the_daemon_view_parses_the_exposition():
    m = Metrics()
    m.build_info.info({"version": "9.9", "backend": "sysfs"})
    m.pending_blocks.set(3)
    m.pending_bytes.set(3 * BLOCK)
    m.failed_blocks.set(2)
    m.onlined.labels("host", "0", "Normal").inc(10)
    m.onlined.labels("host", "1", "Movable").inc(5)
    m.outcomes.labels("onlined", "0").inc(15)
    m.outcomes.labels("permanent", str(errno.EINVAL)).inc(2)
    m.rescans.labels("overflow").inc()
    m.phase_started(PhaseInfo(1, "settle", 4, 4 * BLOCK, {0: 2}))
    m.phase_finished(PhaseInfo(1, "settle", 4, 4 * BLOCK, {0: 2}), 0.5, 1.9)
    m.add_dropped(lambda: {"not_kernel": 7})
    view = DaemonView.from_exposition(generate_latest(m.registry).decode())
    assert (view.version, view.backend) == ("9.9", "sysfs")
    assert (view.pending_blocks, view.pending_bytes, view.failed_blocks) == (3, 3 * BLOCK, 2)
    assert view.onlined == 15
    assert view.outcomes == {"permanent": 2}
    assert view.phases == {"settle": 1}
    assert (view.last_phase_blocks, view.last_phase_bytes, view.last_phase_seconds) == (4, 4 * BLOCK, 0.5)
    assert view.rescans == {"overflow": 1}
    assert view.dropped == {"not_kernel": 7}


def test_census_rows_group_by_node_zone_and_state():
    blocks = [Block(0, BLOCK, 0, State.ONLINE, ("Normal",)), Block(1, BLOCK, 0, State.ONLINE, ("Normal",)),
              Block(2, BLOCK, 1, State.OFFLINE, ("Normal", "Movable")), Block(3, BLOCK, 1, State.ONLINE, ("Movable",))]
    rows = [(r.node, r.zone, r.state, r.blocks, r.bytes) for r in census_rows(blocks)]
    assert rows == [(0, "Normal", "online", 2, 2 * BLOCK), (1, "-", "offline", 1, BLOCK),
                    (1, "Movable", "online", 1, BLOCK)]


def test_a_wildcard_listen_address_is_asked_on_loopback():
    assert endpoint(MetricsConfig(address="0.0.0.0", port=10964)) == "127.0.0.1:10964"
    assert endpoint(MetricsConfig(address="::", port=10964)) == "[::1]:10964"
    assert endpoint(MetricsConfig(address="10.0.0.5", port=1)) == "10.0.0.5:1"


@pytest.mark.asyncio
async def test_a_simulated_daemon_is_never_shown_as_this_host(fake_sysfs):
    """status with this host's backend (sysfs on a fake tree) while a simulated daemon answers: the first line
    and the table are the daemon's, and no plan of this host is printed beside them."""
    config = simulated_config((0, 1 << 30))
    async with live_daemon(config, blocks=8) as daemon:
        _host, port = daemon.metrics_server.address
        asking = cfgload(None, ['backend="sysfs"', f"metrics.port={port}",
                                *(f"plugins.sysfs.{k}={json.dumps(v)}" for k, v in fake_sysfs.options().items())])
        code, out = await anyio.to_thread.run_sync(render, asking)
    assert code == 0, out
    assert out.startswith(f"backend simulated: the running daemon's on 127.0.0.1:{port} (a simulated host, not "
                          "this machine; this command's config says sysfs)")
    assert "this host (" not in out and "plan (host)" not in out
    assert cell(out, "all") == ["", "", "24", "3.0 GiB"]
