"""Helpers for the metrics tests: a live daemon on the simulated backend, and the Prometheus tools.

``live_daemon`` runs a real :class:`hotplugd.daemon.Daemon` in the test's event
loop (the main thread, so its signal task works), serving metrics on a free
loopback port, until the scenario's blocks are all onlined. Blocking work
(promtool, HTTP to the endpoint or to Prometheus) goes through
``anyio.to_thread`` so the daemon keeps running meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hotplugd.config import Config, load
from hotplugd.daemon import Daemon
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "hotplugd.json"
BLOCK = 128 << 20


def require_tool(name: str) -> str:
    """Path of a Prometheus tool; skip without it (fail under CI, which provisions it)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path:
        return path
    message = f"{name} not found: run scripts/provision-prometheus"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_tool(argv: Sequence[str], stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def scenario(*steps: tuple[str, int]) -> str:
    """``--set`` value for ``plugins.simulated.scenario``: (node, bytes) DIMM bursts."""
    body = ", ".join(f'{{kind="dimm", size={size}, node={node}}}' for node, size in steps)
    return f"plugins.simulated.scenario=[{body}]"


def simulated_config(*steps: tuple[int, int], extra: Sequence[str] = ()) -> Config:
    """The simulated backend with a small cost model, metrics on a free loopback port; hotplugd onlines (the
    simulated kernel has the real knobs: these tests count hotplugd's own onlining)."""
    return load(None, ["backend=\"simulated\"", "metrics.port=0", "log_level=\"warning\"",
                       "scheduler.onliner=\"hotplugd\"",
                       "plugins.simulated.nodes=2", "plugins.simulated.boot_memory=\"1GiB\"",
                       scenario(*steps), *extra])


@asynccontextmanager
async def live_daemon(config: Config, blocks: int) -> AsyncIterator[Daemon]:
    """A daemon serving metrics, once it has onlined ``blocks`` blocks; stopped on exit."""
    daemon = Daemon(config, make_manager(config.disabled_plugins), notifier=Notifier({}))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_until(lambda: daemon.scheduler.source_done and daemon.scheduler.onlined >= blocks,
                         timeout=20, what=f"{blocks} blocks onlined")
        try:
            yield daemon
        finally:
            daemon.scheduler.stop()


def endpoint(daemon: Daemon) -> str:
    assert daemon.metrics_server is not None, "the daemon serves no metrics"
    host, port = daemon.metrics_server.address
    return f"{host}:{port}"


def scrape_sync(where: str) -> str:
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as response:
        return response.read().decode()


async def scrape(daemon: Daemon) -> str:
    """The live endpoint's exposition, fetched over HTTP like Prometheus does."""
    return await anyio.to_thread.run_sync(scrape_sync, endpoint(daemon))


def sample_names(text: str) -> set[str]:
    """Every sample name in an exposition (``_bucket``, ``_total``, ``_created`` included)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
