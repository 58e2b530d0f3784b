"""What the live endpoint exports after a simulated hot-add: names, units, labels and values."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .live import BLOCK, live_daemon, scrape, simulated_config

pytestmark = pytest.mark.asyncio

#: Labels a metric may carry; a block index or address would make a TiB 8,192 series.
ALLOWED_LABELS = {"action", "reason", "domain", "node", "zone", "state", "outcome", "errno", "trigger", "result",
                  "onliner", "plugin", "device", "version", "backend", "le"}
NON_BASE_UNITS = ("milliseconds", "microseconds", "minutes", "hours", "kilobytes", "megabytes", "kib", "mib", "gib",
                  "percent", "ms")


def families(text: str) -> dict[str, prometheus_client.Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_hot_add_is_counted_end_to_end():
    config = simulated_config((0, 2 << 30), (1, 1 << 30))
    async with live_daemon(config, blocks=24) as daemon:
        text = await scrape(daemon)
    assert value(text, "hotplugd_blocks_onlined_total") == 24
    assert value(text, "hotplugd_blocks_onlined_total", node="0", zone="Normal") == 16
    assert value(text, "hotplugd_blocks_onlined_total", node="1") == 8
    assert value(text, "hotplugd_uevents_received_total", action="add") == 24
    assert value(text, "hotplugd_online_outcomes_total", outcome="onlined", errno="0") == 24
    assert value(text, "hotplugd_add_to_online_seconds_count") == 24
    assert value(text, "hotplugd_online_call_seconds_count") == 24
    assert value(text, "hotplugd_pending_blocks") == 0 and value(text, "hotplugd_pending_bytes") == 0
    assert value(text, "hotplugd_pending_oldest_age_seconds") == 0
    assert value(text, "hotplugd_failed_blocks") == 0
    assert value(text, "hotplugd_rescans_total", reason="start") == 1
    phases = value(text, "hotplugd_phases_total")
    assert phases >= 1 and value(text, "hotplugd_phase_duration_seconds_count") == phases
    assert value(text, "hotplugd_phase_size_bytes_sum") == 24 * BLOCK
    assert value(text, "hotplugd_phase_blocks_sum") == 24
    # The census is read from the host at scrape time: boot memory (1 GiB per node) plus the hot-add.
    assert value(text, "hotplugd_memory_blocks", node="0", zone="Normal", state="online") == 8 + 16
    assert value(text, "hotplugd_memory_bytes", node="1", state="online") == (8 + 8) * BLOCK
    assert value(text, "hotplugd_memory_blocks", state="offline") == 0
    assert value(text, "hotplugd_memory_census_success") == 1
    build = next(s for f in families(text).values() for s in f.samples if s.name == "hotplugd_build_info")
    assert build.value == 1 and build.labels["backend"] == "simulated" and build.labels["version"]


async def test_names_units_and_labels_follow_prometheus_practice():
    async with live_daemon(simulated_config((0, 1 << 30)), blocks=8) as daemon:
        text = await scrape(daemon)
    found = families(text)
    assert found, "nothing exported"
    for name, family in found.items():
        assert name.startswith("hotplugd_"), f"{name}: not under the one prefix"
        assert family.documentation.strip(), f"{name}: no help text"
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, f"{sample.name}: unexpected labels {set(sample.labels)}"
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), f"{sample.name}: a counter without _total"
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_bytes", "_blocks")), f"{name}: a histogram without its unit"
        assert not any(f"_{unit}" in name for unit in NON_BASE_UNITS), f"{name}: not in base units"


async def test_label_values_known_in_advance_start_at_zero():
    async with live_daemon(simulated_config((0, 1 << 30)), blocks=8) as daemon:
        text = await scrape(daemon)
    for reason in ("start", "overflow", "request", "queue_full"):
        assert any(s.labels.get("reason") == reason for s in families(text)["hotplugd_rescans"].samples), reason
    for reason in ("malformed", "not_kernel"):
        assert value(text, "hotplugd_uevents_dropped_total", reason=reason) == 0
    triggers = {s.labels["trigger"] for s in families(text)["hotplugd_phases"].samples}
    assert {"settle", "max_defer", "offline_bytes", "memmap_share", "ratio_0"} <= triggers


async def test_series_do_not_grow_with_the_number_of_blocks():
    """No per-block labels: a 4x larger hot-add exports exactly the same series."""

    def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items())))
                for f in text_string_to_metric_families(text) for s in f.samples}

    async with live_daemon(simulated_config((0, 1 << 30)), blocks=8) as daemon:
        small = await scrape(daemon)
    async with live_daemon(simulated_config((0, 4 << 30)), blocks=32) as daemon:
        large = await scrape(daemon)
    assert value(large, "hotplugd_blocks_onlined_total") == 4 * value(small, "hotplugd_blocks_onlined_total")
    assert series(large) == series(small)


async def test_the_server_binds_the_configured_address():
    async with live_daemon(simulated_config((0, 1 << 30)), blocks=8) as daemon:
        assert daemon.metrics_server is not None
        host, port = daemon.metrics_server.address
    assert host == "127.0.0.1" and port > 0
