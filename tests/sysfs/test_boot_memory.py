"""Memory present at boot: blocks the start-up scan finds offline while the kernel's auto-online still reads
``offline`` (every boot, with the kernel's default) were added before the plan turned it on, and no kernel
onlines them. Where the plan has the kernel online, hotplugd onlines them at once and says READY only then,
so a unit ordered before ``sysinit.target`` has them online before the rest of the boot; the log puts the
plan, the onlining and READY in the boot (``since_boot``). Where the knob already read on at start (a
restart), a block found offline may be one the kernel is still adding: it gets the grace, as before.
"""

from __future__ import annotations

import anyio
import pytest
from test_daemon_e2e import make

from hotplugd import daemon as daemon_module
from hotplugd.observe.notify import Notifier

pytestmark = pytest.mark.asyncio

BOOT = range(16, 32)  # two 1 GiB DIMMs plugged at boot: 16 blocks of 128 MiB
KERNEL_PLAN = {"onliner": "auto", "kernel_grace": 60.0, "kernel_grace_max": 120.0}


class AtReady(Notifier):
    """What the fake host looked like when the daemon said READY=1."""

    def __init__(self, fake) -> None:
        super().__init__({})
        self.fake = fake
        self.online: set[int] | None = None
        self.writes: list[int] | None = None

    def ready(self, status: str = "") -> bool:
        if self.online is None:
            self.online = self.fake.online_indices()
            self.writes = sorted(index for index, _ in self.fake.writes)
        return super().ready(status)


async def start(daemon) -> None:
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(daemon.run)
        tg.cancel_scope.cancel()


async def test_boot_memory_left_by_a_kernel_with_onlining_off_is_online_before_ready(fake_sysfs, hook_recorder,
                                                                                    hotplugd_logs):
    fake_sysfs.add_blocks(range(0, 16), state="online", zones=("Normal",))
    fake_sysfs.add_blocks(BOOT)  # plugged at boot, the kernel's onlining off (its default): offline
    probe = AtReady(fake_sysfs)
    daemon, _ = make(fake_sysfs, hook_recorder, notifier=probe, scheduler=KERNEL_PLAN)
    daemon.boot_clock = iter([4.25, 4.5, 4.75, 5.0]).__next__  # plan, start_online, start_onlined, ready
    await start(daemon)
    logs = hotplugd_logs
    assert fake_sysfs.knob("auto_online_blocks") == "online"  # the plan: the kernel onlines what comes next
    assert probe.online == set(range(0, 32)) and probe.writes == list(BOOT)  # all 16 online at READY, by hotplugd
    assert [p.trigger for p in hook_recorder.phases] == ["kernel_off_at_start"]
    events = {e["event"]: e for e in logs}
    assert events["plan"]["onliner"] == "kernel" and events["plan"]["since_boot"] == 4.25
    assert events["start_online"]["blocks"] == 16 and events["start_online"]["since_boot"] == 4.5
    assert (events["start_onlined"]["left"], events["start_onlined"]["since_boot"]) == (0, 4.75)
    assert events["ready"]["since_boot"] == 5.0
    assert "kernel's auto-online was off" in events["kernel_takeover"]["reason"]
    order = [e["event"] for e in logs]
    assert order.index("plan") < order.index("start_online") < order.index("start_onlined") < order.index("ready")


async def test_after_a_restart_with_the_kernels_onlining_on_blocks_found_offline_get_the_grace(
        fake_sysfs, hook_recorder, hotplugd_logs):
    fake_sysfs.set_auto_online("online")  # set by the run before (knobs stay set): a DIMM may be mid-add
    fake_sysfs.set_param("online_policy", "contig-zones")
    fake_sysfs.add_blocks(BOOT)
    probe = AtReady(fake_sysfs)
    daemon, _ = make(fake_sysfs, hook_recorder, notifier=probe, scheduler=KERNEL_PLAN)
    await start(daemon)
    logs = hotplugd_logs
    assert probe.online == set() and probe.writes == []  # queued, waiting for the kernel's grace
    assert len(daemon.scheduler.host.queue) == 16 and hook_recorder.phases == []
    assert "start_online" not in [e["event"] for e in logs]
    assert isinstance([e for e in logs if e["event"] == "ready"][0]["since_boot"], float)


async def test_where_hotplugd_onlines_ready_does_not_wait_for_the_start_up_scan(fake_sysfs, hotplugd_logs):
    fake_sysfs.add_blocks(range(16, 20))  # 512 MiB: below max_offline_bytes
    probe = AtReady(fake_sysfs)
    daemon, _ = make(fake_sysfs, notifier=probe,
                     scheduler={"onliner": "hotplugd", "defer": "always", "settle": 30.0, "max_defer": 60.0})
    await start(daemon)
    logs = hotplugd_logs
    assert probe.online == set() and len(daemon.scheduler.host.queue) == 4  # its deferral decides, as before
    assert "start_online" not in [e["event"] for e in logs]


async def test_ready_waits_for_the_blocks_found_at_start_no_longer_than_its_bound(fake_sysfs, monkeypatch,
                                                                                  hotplugd_logs):
    monkeypatch.setattr(daemon_module, "START_ONLINE_BOUND", 0.3)
    fake_sysfs.add_blocks(BOOT)
    probe = AtReady(fake_sysfs)
    daemon, _ = make(fake_sysfs, notifier=probe, scheduler=KERNEL_PLAN)
    hold = anyio.Event()

    async def stuck_phase(*args, **kwargs):
        await hold.wait()  # an online call that does not return

    monkeypatch.setattr(daemon.scheduler.host.phase, "run", stuck_phase)
    await start(daemon)
    logs = hotplugd_logs
    [done] = [e for e in logs if e["event"] == "start_onlined"]
    assert done["left"] == 16 and done["log_level"] == "warning" and "READY now" in done["detail"]
    assert probe.online == set()  # READY came anyway, after the bound
