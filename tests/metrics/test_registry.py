"""A fresh registry per daemon, nothing at import time; the endpoint's defaults."""

from __future__ import annotations

import prometheus_client

from hotplugd.config import Config
from hotplugd.observe.metrics import Metrics
from hotplugd.testing import sample


def test_every_metrics_object_has_its_own_registry_and_import_registers_nothing():
    default = {m.name for m in prometheus_client.REGISTRY.collect()}
    one, two = Metrics(), Metrics()
    one.onlined.labels("host", "0", "Normal").inc(3)
    assert one.registry is not two.registry
    assert sample(one, "hotplugd_blocks_onlined_total", {"domain": "host", "node": "0", "zone": "Normal"}) == 3
    assert sample(two, "hotplugd_blocks_onlined_total", {"domain": "host", "node": "0", "zone": "Normal"}) == 0
    assert not any(name.startswith("hotplugd") for name in default)
    assert {m.name for m in prometheus_client.REGISTRY.collect()} == default


def test_served_on_loopback_by_default_on_a_port_of_its_own():
    metrics = Config().metrics
    assert metrics.address == "127.0.0.1"
    assert not 9100 <= metrics.port <= 9999  # the range Prometheus's exporters have allocated
