"""What the daemon and ``hotplugd status`` make of a backend's devices: the collectors registered on the
daemon's registry, the devices table printed."""

from __future__ import annotations

import functools
import io

import anyio
import pytest
from rich.console import Console
from test_daemon_e2e import make

from hotplugd.commands.status import status
from hotplugd.config import from_mapping
from hotplugd.testing import sample
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.testing.fakedax import FakeDax


@pytest.fixture
def dax(fake_sysfs):
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs)
    dax.set_tiers({4: "0", 22: "1"})
    dax.add_device("dax0.0", node=1, driver="kmem")
    return dax


@pytest.mark.asyncio
async def test_the_daemon_serves_the_backends_own_collectors(fake_sysfs, dax):
    daemon, provider = make(fake_sysfs)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            provider.backend.end()
    assert sample(daemon.metrics, "hotplugd_memory_tier", {"node": "1"}) == 22
    assert sample(daemon.metrics, "hotplugd_dax_device_bytes",
                  {"device": "dax0.0", "mode": "system-ram", "node": "1"}) == 2014 << 20
    census = {tuple(sorted(s.labels.items())): s.value for family in daemon.metrics.registry.collect()
              if family.name == "hotplugd_device_memory_blocks" for s in family.samples}
    assert census and all(dict(labels)["device"] == "dax0.0" and dict(labels)["node"] == "1"
                          for labels in census)


def test_status_prints_the_devices_and_their_nodes(fake_sysfs, dax):
    out = io.StringIO()
    config = from_mapping({"backend": "sysfs", "metrics": {"enabled": False},
                           "plugins": {"sysfs": fake_sysfs.options()}})
    status(config, SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io),
           console=Console(file=out, width=140))
    lines = [line for line in out.getvalue().splitlines() if "dax0.0" in line]
    assert len(lines) == 1 and "system-ram" in lines[0] and "2.0 GiB" in lines[0] and " 22 " in lines[0]
