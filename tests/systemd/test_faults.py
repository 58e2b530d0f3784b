"""The test-only hooks are off unless asked for, and stall exactly as long as told."""

from __future__ import annotations

import pytest

from hotplugd.faults import DEFAULT_STALL_SECONDS, FaultInjection


@pytest.mark.parametrize(("env", "enabled", "seconds"), [
    ({}, False, DEFAULT_STALL_SECONDS),
    ({"HOTPLUGD_TEST_HOOKS": "0"}, False, DEFAULT_STALL_SECONDS),
    ({"HOTPLUGD_TEST_HOOKS": "yes"}, False, DEFAULT_STALL_SECONDS),  # only "1" turns them on
    ({"HOTPLUGD_TEST_HOOKS": "1"}, True, DEFAULT_STALL_SECONDS),
    ({"HOTPLUGD_TEST_HOOKS": "1", "HOTPLUGD_TEST_STALL_SECONDS": "2.5"}, True, 2.5),
    ({"HOTPLUGD_TEST_HOOKS": "1", "HOTPLUGD_TEST_STALL_SECONDS": "long"}, True, DEFAULT_STALL_SECONDS),
    ({"HOTPLUGD_TEST_HOOKS": "1", "HOTPLUGD_TEST_STALL_SECONDS": "-4"}, True, 0.0),
])
def test_from_environ(env: dict[str, str], enabled: bool, seconds: float) -> None:
    hooks = FaultInjection.from_environ(env)
    assert (hooks.enabled, hooks.stall_seconds) == (enabled, seconds)


def test_stall_sleeps_in_the_calling_thread_only_when_enabled() -> None:
    slept: list[float] = []
    assert FaultInjection(enabled=True, stall_seconds=7.0, sleep=slept.append).stall_loop() is True
    assert FaultInjection(enabled=False, stall_seconds=7.0, sleep=slept.append).stall_loop() is False
    assert slept == [7.0]
