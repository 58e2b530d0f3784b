"""The real Daemon with the ``sysfs`` plugin over a fake tree whose ``state`` writes play the kernel.

Its uevent socket, when netlink is on, is opened in a private network namespace
(:mod:`.netns`), with a :class:`~.netns.Forger` beside it to send datagrams from userspace.
"""

from __future__ import annotations

from typing import Any

from hotplugd import hookimpl
from hotplugd.config import from_mapping
from hotplugd.daemon import Daemon
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import HookRecorder
from hotplugd.testing.netns import Forger, in_new_netns
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs import hotplugd_check_config as check_sysfs_table
from hotplugd_sysfs.netlink import open_uevent_socket
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

SMALL_RCVBUF = "64KiB"  # the smallest the plugin accepts


class FakeTreeSysfs:
    """Registers ``sysfs`` over the fake tree's kernel; its uevent socket is opened in a private namespace."""

    def __init__(self, fake: FakeSysfs) -> None:
        self.fake = fake
        self.forger: Forger | None = None

    @hookimpl
    def hotplugd_register_backends(self, registry: Any) -> None:
        registry.add("sysfs", lambda options: SysfsBackend.from_options(options, io=self.fake.io))

    @hookimpl
    def hotplugd_check_config(self, plugins: Any) -> list:
        return check_sysfs_table(plugins)

    def open_socket(self, rcvbuf: int) -> Any:
        sock, size, self.forger = in_new_netns(lambda: (*open_uevent_socket(rcvbuf), Forger()))
        return sock, size


def daemon_on(provider: FakeTreeSysfs, recorder: HookRecorder, *, netlink: bool = True) -> Daemon:
    """The real Daemon with the sysfs plugin on the fake tree; without netlink, events come from ``feed``."""
    options = provider.fake.options(netlink=True, rcvbuf=SMALL_RCVBUF) if netlink else provider.fake.options()
    # hotplugd's own onlining is what these storms and faults test; the knobs' record stays in the tree
    data = {"backend": "sysfs", "metrics": {"enabled": False}, "disabled_plugins": ["sysfs"],
            "state_directory": str(provider.fake.base / "state"), "scheduler": {"onliner": "hotplugd"},
            "plugins": {"sysfs": options}}
    pm = make_manager(["sysfs"], load_entry_points=False, environ={},
                      extra=[("fake-tree-sysfs", provider), ("recorder", recorder)])
    return Daemon(from_mapping(data), pm, metrics=Metrics(), notifier=Notifier({}), serve_metrics=False)
