"""Guests online at the same time, unless ``parallel_guests`` bounds how many run a phase at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qga_fakes import FakeVM, Overlap, fake_vms

from hotplugd.testing import running, wait_until

pytestmark = pytest.mark.asyncio

NEVER = 3600


def _daemon(make_daemon: Any, vms: list[FakeVM], **options: Any) -> Any:
    shared = Overlap()
    for vm in vms:
        vm.agent.overlap = shared
        vm.agent.add(range(32, 36))  # the same phys-indices in every guest: a domain each
        vm.agent.hold_sets()
    config = {"plugins": {"qga": {"guest": [vm.table() for vm in vms], "poll_interval": NEVER, **options}}}
    return make_daemon("qga", config, entry_points=True)


async def test_by_default_every_guest_onlines_at_once(tmp_path: Path, make_daemon: Any) -> None:
    async with fake_vms(tmp_path, 3) as vms:
        daemon = _daemon(make_daemon, vms)
        async with running(daemon):
            await wait_until(lambda: vms[0].agent.overlap.now == 3, what="a batch in flight in each guest")
            for vm in vms:
                vm.agent.release_sets()
            await wait_until(lambda: all(vm.agent.online_indices() == set(range(32, 36)) for vm in vms),
                             what="every guest onlined")
            daemon.scheduler.stop()
        assert [vm.agent.set_calls() for vm in vms] == [[[32, 33, 34, 35]]] * 3  # one batch per guest


async def test_parallel_guests_bounds_the_guests_onlining_at_once(tmp_path: Path, make_daemon: Any) -> None:
    async with fake_vms(tmp_path, 3) as vms:
        daemon = _daemon(make_daemon, vms, parallel_guests=2)
        assert daemon.backend.parallel_domains == 2
        async with running(daemon):
            await wait_until(lambda: vms[0].agent.overlap.now == 2, what="two guests' batches in flight")
            held = [vm for vm in vms if vm.agent.set_calls()]
            waiting = next(vm for vm in vms if not vm.agent.set_calls())
            # the third guest's blocks are taken for a phase, which waits for a free slot
            await wait_until(lambda: daemon.scheduler.domain(waiting.name).in_phase == set(range(32, 36)),
                             what="the third guest's phase waiting")
            assert not waiting.agent.set_calls()
            held[0].agent.release_sets()
            await wait_until(lambda: len(waiting.agent.set_calls()) == 1, what="the third guest's turn")
            for vm in vms:
                vm.agent.release_sets()
            await wait_until(lambda: all(vm.agent.online_indices() == set(range(32, 36)) for vm in vms),
                             what="every guest onlined")
            daemon.scheduler.stop()
        assert vms[0].agent.overlap.most == 2
