"""A plugin's bug stays the plugin's: a raising backend fails one block, a raising hook is logged by name."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from hotplugd import ZoneRequest, hookimpl
from hotplugd.testing import FakeBackend, FakeHost, running, sample


class Boom:
    """A plugin whose observer and policy hooks all raise."""

    def __init__(self, *hooks: str) -> None:
        self.hooks = set(hooks)

    def _maybe_raise(self, hook: str) -> None:
        if hook in self.hooks:
            raise ValueError(f"bug in {hook}")

    @hookimpl
    def hotplugd_phase_started(self, phase):
        self._maybe_raise("hotplugd_phase_started")

    @hookimpl
    def hotplugd_phase_finished(self, phase, reports, seconds):
        self._maybe_raise("hotplugd_phase_finished")

    @hookimpl
    def hotplugd_block_outcome(self, report):
        self._maybe_raise("hotplugd_block_outcome")

    @hookimpl(tryfirst=True)
    def hotplugd_choose_zone(self, block):
        self._maybe_raise("hotplugd_choose_zone")
        return None

    @hookimpl
    def hotplugd_register_collectors(self, registry):
        self._maybe_raise("hotplugd_register_collectors")


def failures(logs: list[dict]) -> list[tuple[str, str]]:
    return [(e["hook"], e["plugin"]) for e in logs if e["event"] == "hook_failed"]


@pytest.mark.asyncio
async def test_backend_raising_for_one_block_fails_only_that_block(make_daemon, hook_recorder):
    host = FakeHost()
    host.script(3, RuntimeError("firmware said no"))
    for index in range(8):
        host.add(index)  # present at start (coldplug): onlined by the first phase
    backend = FakeBackend(host)
    backend.end()
    daemon = make_daemon(backend)
    with capture_logs() as logs:
        await daemon.run(until_idle=True)
    outcomes = hook_recorder.outcomes()
    assert outcomes[3] == "error"
    assert {i: o for i, o in outcomes.items() if i != 3} == {i: "onlined" for i in range(8) if i != 3}
    assert host.online_indices() == set(range(8)) - {3}
    assert daemon.scheduler.host.failed == {3: "error"}
    report = next(r for r in hook_recorder.reports if r.block.index == 3)
    assert "RuntimeError: firmware said no" in report.result.detail
    assert [e["block"] for e in logs if e["event"] == "backend_online_failed"] == [3]
    assert sample(daemon.metrics, "hotplugd_online_outcomes_total", {"outcome": "error", "errno": "0"}) == 1


@pytest.mark.asyncio
async def test_daemon_keeps_going_after_a_backend_error(make_daemon, hook_recorder):
    """After the failed block, later hot-adds are still onlined (the daemon did not stop)."""
    host = FakeHost()
    host.script(0, RuntimeError("once"))
    backend = FakeBackend(host)

    class MoreAfterFailure:
        """Hot-adds blocks 1 and 2 once block 0 has failed, then ends the event stream."""

        @hookimpl
        def hotplugd_block_outcome(self, report):
            if report.block.index == 0:
                backend.add(1, 2)
                backend.end()

    daemon = make_daemon(backend, plugins=[("more", MoreAfterFailure())])
    async with running(daemon):
        backend.add(0)
    assert hook_recorder.outcomes() == {0: "error", 1: "onlined", 2: "onlined"}
    assert len(hook_recorder.phases) >= 2


@pytest.mark.asyncio
@pytest.mark.parametrize("hook", [
    "hotplugd_phase_started", "hotplugd_phase_finished", "hotplugd_block_outcome",
    "hotplugd_choose_zone", "hotplugd_register_collectors",
])
async def test_raising_hook_is_logged_with_plugin_name_and_phase_completes(make_daemon, hook_recorder, hook):
    backend = FakeBackend()
    daemon = make_daemon(backend, plugins=[("buggy-plugin", Boom(hook))])
    with capture_logs() as logs:
        async with running(daemon):
            backend.add(*range(4))
            backend.end()
    assert hook_recorder.outcomes() == {i: "onlined" for i in range(4)}
    assert backend.host.online_indices() == set(range(4))
    assert "hotplugd_phase_finished" in hook_recorder.names()
    logged = failures(logs)
    assert logged and set(logged) == {(hook, "buggy-plugin")}
    assert all(e.get("exc_info") for e in logs if e["event"] == "hook_failed")


@pytest.mark.asyncio
async def test_raising_policy_falls_through_to_the_next_chooser(make_daemon):
    """A policy plugin that raises is skipped: the next implementation (here the built-in) decides."""

    class Movable:
        @hookimpl
        def hotplugd_choose_zone(self, block):
            return ZoneRequest.MOVABLE

    backend = FakeBackend()
    daemon = make_daemon(backend, plugins=[("movable", Movable()), ("buggy", Boom("hotplugd_choose_zone"))])
    with capture_logs() as logs:
        async with running(daemon):
            backend.add(0, 1)
            backend.end()
    assert [zone for _, zone in backend.host.calls] == [ZoneRequest.MOVABLE, ZoneRequest.MOVABLE]
    assert set(failures(logs)) == {("hotplugd_choose_zone", "buggy")}
