"""Idle means asleep: a daemon with nothing to do sets no timer, and publishes nothing, until an event comes.

The queue's numbers are published on change (each event, each turn of a domain's
loop) instead of every 0.1 s; STATUS= and the textfile follow the changes; only
systemd's watchdog, when asked for, keeps one timer. "No timer" is read from the
asyncio loop's scheduled callbacks: nothing here depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest
from anyio.lowlevel import checkpoint

from hotplugd.observe.notify import Notifier
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until

pytestmark = pytest.mark.asyncio

HOLD = {"settle": 600, "max_defer": 600}


def timers() -> list[asyncio.TimerHandle]:
    """The event loop's pending timers (``loop._scheduled``: asyncio keeps every ``call_at`` there)."""
    loop = asyncio.get_running_loop()
    return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


async def settled(timers_left: int = 0) -> None:
    """Wait until no task runs and at most ``timers_left`` timers are set (a periodic wake-up never lets it).

    Not ``wait_until``: its own timeout is a timer.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(timers()) <= timers_left:
            await anyio.wait_all_tasks_blocked()
            if len(timers()) <= timers_left:
                return
        await anyio.sleep(0.001)
    raise AssertionError(f"still set after 20 s: {timers()}")


class Systemd(Notifier):
    """A notifier as under systemd (``NOTIFY_SOCKET`` set) that keeps what it sends instead of sending it."""

    def __init__(self, **env: str) -> None:
        super().__init__({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
        self.sent: list[str] = []

    def send(self, *fields: str) -> bool:
        self.sent.extend(fields)
        return True


@pytest.fixture
def quick_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status line and textfile wait 10 ms (not 1 s) between two refreshes: the test settles sooner."""
    monkeypatch.setattr("hotplugd.daemon.STATUS_INTERVAL", 0.01)


async def test_an_idle_daemon_sets_no_timer_and_publishes_nothing(make_daemon, tmp_path, quick_status):
    textfile = tmp_path / "hotplugd.prom"
    backend = FakeBackend(FakeHost({0: 4}), concurrency=4)
    backend.host.add(7)  # coldplug: a phase at start
    daemon = make_daemon(backend, {"metrics": {"enabled": False, "textfile": str(textfile)}})
    daemon.notifier = systemd = Systemd()
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: backend.host.online_indices() == {1, 2, 7})
        await settled()
        version, snapshot = daemon.scheduler.changes.version, daemon.scheduler.queue_snapshot()
        written = textfile.stat().st_mtime_ns
        statuses = len(systemd.sent)
        for _ in range(100):  # let every task run as often as it wants: none wants to
            await checkpoint()
        await anyio.wait_all_tasks_blocked()
        assert timers() == []
        assert daemon.scheduler.changes.version == version  # nothing republished
        assert daemon.scheduler.queue_snapshot() == snapshot
        assert textfile.stat().st_mtime_ns == written and len(systemd.sent) == statuses

        backend.add(3)  # an event wakes it: the status line follows
        await wait_until(lambda: any("onlined 4" in s for s in systemd.sent), what="STATUS= after the event")
        assert daemon.scheduler.changes.version > version
        await settled()


async def test_the_watchdog_is_the_only_timer_of_an_idle_daemon(make_daemon, quick_status):
    backend = FakeBackend(FakeHost({0: 4}))
    daemon = make_daemon(backend)
    daemon.notifier = systemd = Systemd(WATCHDOG_USEC="600000000")  # a 600 s watchdog: pinged every 150 s
    async with running(daemon, until_idle=False):
        await wait_until(lambda: "WATCHDOG=1" in systemd.sent)
        await settled(timers_left=1)
        (timer,) = timers()
        assert 0 < timer.when() - asyncio.get_running_loop().time() <= 150
        assert systemd.sent.count("WATCHDOG=1") == 1  # no ping but at its interval


async def test_a_scrape_reads_the_queue_as_the_last_event_left_it(make_daemon, hotplugd_metrics):
    """Published on change: no wait for a timer between an event and the scrape that shows it."""
    clock = ManualClock()
    backend = FakeBackend(FakeHost({0: 4}), concurrency=4)
    daemon = make_daemon(backend, clock=clock, **HOLD)
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)
        assert sample(hotplugd_metrics, "hotplugd_pending_blocks") == 2
        assert sample(hotplugd_metrics, "hotplugd_pending_bytes") == 2 * backend.host.block_size
        clock.advance(5)  # the age is the scrape's clock against the oldest block's arrival
        assert sample(hotplugd_metrics, "hotplugd_pending_oldest_age_seconds") == 5
        backend.remove(1)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 1)
        assert sample(hotplugd_metrics, "hotplugd_pending_blocks") == 1
