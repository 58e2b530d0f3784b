"""Prometheus's own linter and rule tester on the live endpoint and on config/prometheus."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anyio
import pytest

from .live import PROMETHEUS_CONFIG, live_daemon, require_tool, run_tool, scrape, simulated_config

RULES = PROMETHEUS_CONFIG / "hotplugd.rules.yml"


@pytest.mark.asyncio
async def test_promtool_check_metrics_on_the_live_endpoint_has_no_warnings():
    promtool = require_tool("promtool")
    config = simulated_config((0, 1 << 30), (1, 512 << 20))
    async with live_daemon(config, blocks=12) as daemon:
        text = await scrape(daemon)
    result = await anyio.to_thread.run_sync(lambda: run_tool([promtool, "check", "metrics"], stdin=text))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
    assert "hotplugd_blocks_onlined_total" in text


def test_promtool_check_metrics_does_flag_bad_names():
    """The lint is live: a counter without _total and a non-base unit are reported."""
    promtool = require_tool("promtool")
    bad = ("# HELP hotplugd_onlined Blocks\n# TYPE hotplugd_onlined counter\nhotplugd_onlined 1\n"
           "# HELP hotplugd_call_milliseconds Call\n# TYPE hotplugd_call_milliseconds gauge\n"
           "hotplugd_call_milliseconds 2\n")
    result = run_tool([promtool, "check", "metrics"], stdin=bad)
    report = result.stdout + result.stderr
    assert result.returncode != 0 and "_total" in report and "base unit" in report, report


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    result = run_tool([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


def test_promtool_check_config_of_the_example():
    promtool = require_tool("promtool")
    result = run_tool([promtool, "check", "config", str(PROMETHEUS_CONFIG / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    promtool = require_tool("promtool")
    result = run_tool([promtool, "test", "rules", "tests/hotplugd.test.yml"], cwd=PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_names(text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", text, re.MULTILINE)


def test_every_alert_is_unit_tested_and_the_tests_bite(tmp_path: Path):
    """Each alert has a rule test that fails when the alert never fires."""
    promtool = require_tool("promtool")
    rules = RULES.read_text()
    names = alert_names(rules)
    tests = (PROMETHEUS_CONFIG / "tests" / "hotplugd.test.yml").read_text()
    assert len(names) == 13 and all(f"alertname: {name}" in tests for name in names)
    shutil.copytree(PROMETHEUS_CONFIG / "tests", tmp_path / "tests")
    for name in names:
        silenced = re.sub(rf"(- alert: {name}\n\s*expr: ).*", r"\1vector(1) == 2", rules)
        assert silenced != rules
        (tmp_path / RULES.name).write_text(silenced)
        result = run_tool([promtool, "test", "rules", "tests/hotplugd.test.yml"], cwd=tmp_path)
        assert result.returncode != 0 and f"alertname: {name}" in result.stdout + result.stderr, name


def test_what_the_config_promises_has_an_alert_on_a_metric_the_daemon_exports():
    """The seed's kernel's stuck blocks, conflicting onliners, plugin failures, refused reloads, zone mismatches:
    each an alert whose expression reads a family hotplugd really exports."""
    from hotplugd.observe.metrics import Metrics

    rules = RULES.read_text()
    exported = {metric.name for metric in Metrics().registry.collect()}
    wanted = {"HotplugdKernelDeferredStuck": "hotplugd_kernel_deferred_stuck_blocks",
              "HotplugdConflictingOnliners": "hotplugd_conflicting_onliners",
              "HotplugdPluginFailed": "hotplugd_plugin_failures",
              "HotplugdReloadRefused": "hotplugd_config_reloads",
              "HotplugdZoneMismatch": "hotplugd_zone_mismatches"}
    for alert, family in wanted.items():
        expr = re.search(rf"- alert: {alert}\n\s*expr: (.*)", rules)
        assert expr is not None and family in expr.group(1), alert
        assert family in exported, family
    assert "hotplugd_kernel_deferred_stuck_blocks" in (RULES.parents[1] / "hotplugd.toml").read_text()


def test_provisioning_is_a_quick_no_op_once_done():
    require_tool("promtool")
    require_tool("prometheus")
    result = run_tool([str(PROMETHEUS_CONFIG.parents[1] / "scripts" / "provision-prometheus")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already provisioned" in result.stdout
