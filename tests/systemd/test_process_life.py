"""The daemon's life as systemd drives it, on a real process: READY, SIGTERM, SIGHUP, the watchdog, exit 78.

Each test runs ``hotplugd run`` on the simulated backend (one node, 8 blocks offline
at start, a slow serialised online) with a real datagram socket as ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotplugd.errors import EXIT_CONFIG

from .daemonconfig import COLDPLUG_BLOCKS, HOLD, write_config
from .fakesystemd import DaemonProcess, Notification, NotifyListener


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify")
    yield listener
    listener.close()


@pytest.fixture
def start(tmp_path: Path, notify: NotifyListener) -> Iterator:
    procs: list[DaemonProcess] = []

    def start(config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        procs.append(DaemonProcess(["--config", str(config)], {"NOTIFY_SOCKET": notify.address, **(env or {})}))
        return procs[-1]

    yield start
    for proc in procs:
        proc.close()


def ready(note: Notification) -> bool:
    return note.fields.get("READY") == "1"


def status_has(text: str):
    return lambda note: text in note.fields.get("STATUS", "")


def test_ready_only_after_the_coldplug_scan_queued_every_block(tmp_path, notify, start) -> None:
    daemon = start(write_config(tmp_path / "c.toml", scheduler=HOLD))
    note = notify.wait_for(ready)
    assert note.fields["STATUS"].startswith(f"pending {COLDPLUG_BLOCKS} blocks, onlined 0")
    daemon.wait_logged("ready")  # stderr is read by a thread: it may lag behind the datagram
    events = [r["event"] for r in daemon.events()]
    assert events.index("rescan") < events.index("ready")
    assert daemon.logged("rescan")[0]["queued"] == COLDPLUG_BLOCKS
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_sigterm_lets_the_online_in_flight_finish_and_exits_0(tmp_path, notify, start) -> None:
    daemon = start(write_config(tmp_path / "c.toml", cost="400ms", log_level="debug"))
    notify.wait_for(ready)
    daemon.wait_logged("phase_started")  # the first online call is in flight now
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.output()
    (finished,) = daemon.logged("phase_finished")
    # The call in flight ended with a report; no other call was started; the rest stay offline.
    assert 0 < finished["blocks"] < COLDPLUG_BLOCKS  # stopped mid-phase: some, not all
    assert finished["failed"] == 0
    notify.wait_for(lambda n: n.fields.get("STOPPING") == "1")
    assert daemon.logged("stopped")


@pytest.mark.parametrize(("second", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM),
                                               (signal.SIGINT, 128 + signal.SIGINT)])
def test_a_second_signal_exits_at_once(tmp_path, notify, start, second, code) -> None:
    daemon = start(write_config(tmp_path / "c.toml", cost="60s", log_level="debug"))
    notify.wait_for(ready)
    daemon.wait_logged("phase_started")
    daemon.signal(signal.SIGTERM)
    daemon.wait_logged("stopping")
    daemon.signal(second)
    assert daemon.wait(timeout=20) == code  # the 60 s online call was not waited for
    assert daemon.logged("exiting_now") and not daemon.logged("stopped")


def test_sighup_applies_a_new_config_keeps_the_queue_and_refuses_a_broken_one(tmp_path, notify, start) -> None:
    config = write_config(tmp_path / "c.toml", scheduler=HOLD)
    daemon = start(config)
    notify.wait_for(ready)

    write_config(config, scheduler={**HOLD, "parallel_hotplug_ratio": "0.5"}, zones="movable", log_level="debug")
    mark = len(notify.received)
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_for(lambda n: n.fields.get("RELOADING") == "1", since=mark)
    assert int(reloading.fields["MONOTONIC_USEC"]) > 0
    done = notify.wait_for(ready, since=mark)
    assert done.fields["STATUS"] == (f"reloaded; pending {COLDPLUG_BLOCKS} blocks, onlined 0, failed 0; "
                                     "ratio 0.5, zones movable, log debug")
    assert daemon.wait_logged("reloaded")["ratio"] == 0.5

    config.write_text(config.read_text().replace("parallel_hotplug_ratio = 0.5", "parallel_hotplug_ratio = -1"))
    mark = len(notify.received)
    daemon.signal(signal.SIGHUP)
    refused = notify.wait_for(ready, since=mark)
    assert refused.fields["STATUS"].startswith(f"reload refused; pending {COLDPLUG_BLOCKS} blocks")
    assert refused.fields["STATUS"].endswith("ratio 0.5, zones movable, log debug")  # the old config stays
    assert "scheduler.parallel_hotplug_ratio" in daemon.wait_logged("reload_refused")["error"]
    assert daemon.proc.poll() is None

    # The queued blocks were kept through both reloads: a shorter max_defer now onlines them,
    # and the debug level the first reload set shows the phase's debug line.
    assert not daemon.logged("phase_started")
    write_config(config, scheduler={**HOLD, "max_defer": '"100ms"'}, log_level="debug")
    daemon.signal(signal.SIGHUP)
    notify.wait_for(status_has(f"pending 0 blocks, onlined {COLDPLUG_BLOCKS}, failed 0"), since=mark)
    assert daemon.wait_logged("phase_started")["blocks"] == COLDPLUG_BLOCKS
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_sighup_with_an_unreadable_config_path_is_refused(tmp_path, notify, start) -> None:
    config = write_config(tmp_path / "c.toml", scheduler=HOLD)
    daemon = start(config)
    notify.wait_for(ready)
    config.unlink()
    config.mkdir()  # now a directory: reading it fails with an OSError, not a parse error
    mark = len(notify.received)
    daemon.signal(signal.SIGHUP)
    assert notify.wait_for(ready, since=mark).fields["STATUS"].startswith("reload refused")
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_the_test_hook_stalls_the_event_loop_so_watchdog_pings_stop(tmp_path, notify, start) -> None:
    env = {"WATCHDOG_USEC": "200000", "HOTPLUGD_TEST_HOOKS": "1", "HOTPLUGD_TEST_STALL_SECONDS": "3"}
    daemon = start(write_config(tmp_path / "c.toml", scheduler=HOLD), env)
    notify.wait_for(ready)
    pings = lambda: [n.at for n in notify.received if n.fields.get("WATCHDOG") == "1"]  # noqa: E731
    notify.wait_for(lambda n: n.fields.get("WATCHDOG") == "1")
    daemon.signal(signal.SIGUSR2)
    daemon.wait_logged("test_stall")
    count = len(pings())
    notify.wait_for(lambda n: n.fields.get("WATCHDOG") == "1", since=len(notify.received) + 1, timeout=30)
    times = pings()
    assert len(times) > count
    # Pings come every 0.1 s; while the loop slept 3 s none came.
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) >= 2.0
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_without_faults_sigusr2_is_ignored(tmp_path, notify, start) -> None:
    daemon = start(write_config(tmp_path / "c.toml", scheduler=HOLD), {"HOTPLUGD_TEST_HOOKS": "0"})
    notify.wait_for(ready)
    daemon.signal(signal.SIGUSR2)
    daemon.wait_logged("signal_ignored")
    mark = len(notify.received)
    daemon.signal(signal.SIGHUP)  # the loop still runs: it reloads (an idle daemon sends no STATUS= of its own)
    assert notify.wait_for(ready, since=mark).fields["STATUS"].startswith("reloaded")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_config_error_at_start_exits_78_before_ready(tmp_path, notify, start) -> None:
    config = write_config(tmp_path / "c.toml")
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "loud"'))
    daemon = start(config)
    assert daemon.wait() == EXIT_CONFIG == 78
    assert "log_level" in daemon.output() and "Traceback" not in daemon.output()
    notify.poll(0.2)
    assert not any(ready(n) for n in notify.received)


def test_a_watchdog_abort_leaves_the_stuck_stack_in_the_log(tmp_path, notify, start) -> None:
    """systemd's watchdog kills with SIGABRT: faulthandler prints where the loop was stuck."""
    env = {"HOTPLUGD_TEST_HOOKS": "1", "HOTPLUGD_TEST_STALL_SECONDS": "60"}
    daemon = start(write_config(tmp_path / "c.toml", scheduler=HOLD), env)
    notify.wait_for(ready)
    daemon.signal(signal.SIGUSR2)
    daemon.wait_logged("test_stall")
    daemon.signal(signal.SIGABRT)
    assert daemon.wait() == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in daemon.output()
    assert "in stall_loop" in daemon.output()
