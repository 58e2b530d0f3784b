"""The daemon's own start and stop around its backend: ``stop()`` after a failed start, a bounded stop."""

from __future__ import annotations

import anyio
import pytest

import hotplugd.daemon
from hotplugd.errors import BackendError
from hotplugd.testing import FakeBackend

pytestmark = pytest.mark.asyncio


class FailingStart(FakeBackend):
    async def start(self) -> None:
        raise BackendError("cannot bind the uevent socket")


class HangingStop(FakeBackend):
    async def stop(self) -> None:
        await anyio.sleep_forever()  # a backend bug: stop() never returns


async def test_a_backend_whose_start_fails_is_stopped(make_daemon, hotplugd_logs):
    backend = FailingStart()
    daemon = make_daemon(backend)
    with pytest.raises(BackendError, match="cannot bind"):
        await daemon.run(until_idle=True)
    assert backend.stopped  # the contract: stop() runs, also after a failed start
    assert [e["event"] for e in hotplugd_logs][-1] == "stopped"


async def test_a_backend_whose_stop_hangs_does_not_hang_the_shutdown(make_daemon, monkeypatch, tmp_path,
                                                                    hotplugd_logs):
    monkeypatch.setattr(hotplugd.daemon, "STOP_TIMEOUT", 0.05)
    backend = HangingStop()
    textfile = tmp_path / "hotplugd.prom"
    daemon = make_daemon(backend, {"metrics": {"enabled": False, "textfile": str(textfile)}})
    backend.add(1)
    backend.end()
    with anyio.fail_after(30):  # without the bound: forever
        await daemon.run(until_idle=True)
    events = [e["event"] for e in hotplugd_logs]
    assert "backend_stop_timeout" in events and events[-1] == "stopped"
    assert "hotplugd_blocks_onlined_total" in textfile.read_text()  # the final textfile is still written
