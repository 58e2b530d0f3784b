"""The sd_notify client against a real unix datagram socket used as ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hotplugd.observe.notify import Notifier

from .fakesystemd import NotifyListener


@pytest.fixture
def listener(tmp_path: Path):
    sock = NotifyListener(tmp_path / "notify")
    yield sock
    sock.close()


def test_ready_and_status_arrive_as_one_datagram(listener: NotifyListener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.address})
    assert notifier.enabled
    assert notifier.ready("pending 3 blocks, onlined 0")
    (note,) = listener.poll(5)
    assert note.fields == {"READY": "1", "STATUS": "pending 3 blocks, onlined 0"}


def test_every_message_kind_reaches_the_socket(listener: NotifyListener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.address})
    assert notifier.status("busy") and notifier.watchdog() and notifier.reloading() and notifier.stopping()
    notes = [n.fields for n in listener.poll(5)]
    while len(notes) < 4:
        notes += [n.fields for n in listener.poll(5)]
    assert notes[0] == {"STATUS": "busy"}
    assert notes[1] == {"WATCHDOG": "1"}
    assert notes[2]["RELOADING"] == "1" and int(notes[2]["MONOTONIC_USEC"]) > 0
    assert notes[3] == {"STOPPING": "1"}


def test_abstract_namespace_address() -> None:
    name = f"hotplugd-test-{uuid.uuid4().hex}"
    listener = NotifyListener(abstract=name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        (note,) = listener.poll(5)
        assert note.fields == {"READY": "1"}
    finally:
        listener.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "gone")
    listener.close()
    os.unlink(tmp_path / "gone")
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "20000000"}, 10.0),  # ping at half the timeout
    ({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": str(os.getpid())}, 3.0),
    ({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == interval
