"""A real Prometheus server scrapes a daemon that ran a simulated hot-add, and evaluates our rules and dashboard."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from .dashboard import concrete, expressions
from .live import DASHBOARD, PROMETHEUS_CONFIG, endpoint, live_daemon, require_tool, simulated_config
from .promserver import PrometheusServer

BLOCKS = 16 + 8  # 2 GiB on node 0 and 1 GiB on node 1, in 128 MiB blocks


def check_through_prometheus(server: PrometheusServer) -> None:
    """Everything asked of Prometheus, from a worker thread (the daemon keeps serving meanwhile)."""
    seen = server.wait_for_value("sum(hotplugd_blocks_onlined_total)", BLOCKS)
    assert seen == BLOCKS, f"Prometheus saw {seen} onlined blocks, the scenario added {BLOCKS}\n{server.tail()}"
    by_node = {r["metric"]["node"]: float(r["value"][1])
               for r in server.query("sum by (node) (hotplugd_blocks_onlined_total)")}
    assert by_node == {"0": 16.0, "1": 8.0}
    build = server.query("hotplugd_build_info")
    assert [r["metric"]["backend"] for r in build] == ["simulated"]
    assert float(server.query('up{job="hotplugd"}')[0]["value"][1]) == 1
    # Our alert rules load, evaluate without error, and a healthy daemon raises none.
    rules = server.wait_rules_evaluated()
    assert len(rules) == 13 and all(r["health"] == "ok" for r in rules), rules
    alerts = server.wait_alerts_settled()
    assert alerts == [], alerts
    # Every dashboard query is valid PromQL for this Prometheus and runs on the scraped data.
    for _where, expr in expressions(DASHBOARD).items():
        server.query(concrete(expr))  # raises on a PromQL error
    assert server.query('sum(hotplugd_memory_blocks{state="online"})'), "no census in Prometheus"


@pytest.mark.asyncio
async def test_a_real_prometheus_scrapes_the_onlined_blocks(tmp_path: Path):
    binary = require_tool("prometheus")
    config = simulated_config((0, 2 << 30), (1, 1 << 30))
    async with live_daemon(config, blocks=BLOCKS) as daemon:
        with PrometheusServer(binary, tmp_path, endpoint(daemon), [PROMETHEUS_CONFIG / "hotplugd.rules.yml"]) as server:
            await anyio.to_thread.run_sync(check_through_prometheus, server)
