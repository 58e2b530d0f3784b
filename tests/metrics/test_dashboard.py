"""The Grafana dashboard and the alert rules use only metrics the live daemon exports."""

from __future__ import annotations

import json
import re

import pytest

from .dashboard import concrete, expressions, metric_names
from .live import DASHBOARD, PROMETHEUS_CONFIG, live_daemon, sample_names, scrape, simulated_config

#: Series Prometheus makes itself for every target: alerts may use them, the dashboard does not.
PROMETHEUS_SERIES = {"up"}
#: Labelled families with no series until something fails (a plugin left out): declared, checked below.
ONLY_ON_FAILURE = {"hotplugd_plugin_failures"}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the live endpoint serves after a hot-add."""
    import anyio

    async def collect() -> set[str]:
        async with live_daemon(simulated_config((0, 1 << 30), (1, 512 << 20)), blocks=12) as daemon:
            return sample_names(await scrape(daemon))

    return anyio.run(collect)


def test_the_dashboard_is_valid_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "hotplugd" and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_every_dashboard_expression_uses_only_exported_metrics(exported):
    queries = expressions(DASHBOARD)
    assert len(queries) >= 30
    used: set[str] = set()
    for where, expr in queries.items():
        names = metric_names(expr)
        assert names, f"{where}: selects no metric"
        missing = names - exported
        assert not missing, f"{where}: {sorted(missing)} not exported by the daemon ({expr})"
        used |= names
    # The dashboard shows the metrics the issue asks for, not a subset that happens to exist.
    for family in ("hotplugd_uevents_received_total", "hotplugd_uevents_dropped_total", "hotplugd_rescans_total",
                   "hotplugd_pending_blocks", "hotplugd_pending_bytes", "hotplugd_blocks_onlined_total",
                   "hotplugd_online_outcomes_total", "hotplugd_add_to_online_seconds_bucket",
                   "hotplugd_online_call_seconds_bucket", "hotplugd_phase_duration_seconds_bucket",
                   "hotplugd_phase_size_bytes_sum", "hotplugd_phase_workers", "hotplugd_phases_total",
                   "hotplugd_memory_blocks", "hotplugd_build_info"):
        assert family in used, f"the dashboard does not show {family}"


def test_the_metric_name_check_catches_a_typo(exported):
    names = metric_names('sum(rate(hotplugd_blocks_online_total{instance=~"$instance"}[$__rate_interval]))')
    assert names == {"hotplugd_blocks_online_total"} and not names <= exported


def test_grafana_variables_are_made_concrete():
    assert concrete('rate(x{instance=~"$instance"}[$__rate_interval])') == 'rate(x{instance=~".*"}[1m])'


def test_every_alert_expression_uses_only_exported_metrics(exported):
    rules = (PROMETHEUS_CONFIG / "hotplugd.rules.yml").read_text()
    exprs = re.findall(r"^\s*expr: (.+)$", rules, re.MULTILINE)
    assert len(exprs) == 13
    for expr in exprs:
        missing = metric_names(expr) - exported - PROMETHEUS_SERIES - ONLY_ON_FAILURE
        assert not missing, f"{expr}: {sorted(missing)} not exported"
    from hotplugd.observe.metrics import Metrics

    assert ONLY_ON_FAILURE <= {family.name for family in Metrics().registry.collect()}
