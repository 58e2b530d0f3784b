"""The ``[plugins.sysfs]`` table: defaults, parsing and config problems."""

from __future__ import annotations

import pytest

from hotplugd import ConfigProblem
from hotplugd_sysfs import SysfsBackend, hotplugd_check_config
from hotplugd_sysfs.settings import UDEV_RULES_DIRS, Settings, parse


def test_defaults():
    settings = parse({})
    assert settings == Settings()
    assert (settings.root, settings.proc, settings.concurrency, settings.netlink) == ("/sys", "/proc", 1, True)
    assert settings.udev_rules_dirs == UDEV_RULES_DIRS
    assert SysfsBackend().concurrency == 1


def test_options_are_parsed():
    settings = parse({"root": "/host/sys/", "concurrency": 4, "rcvbuf": "8MiB", "netlink": False,
                      "udev_rules_dirs": ["/x"], "proc": "/host/proc"})
    assert (settings.root, settings.concurrency, settings.rcvbuf, settings.udev_rules_dirs) == (
        "/host/sys", 4, 8 << 20, ("/x",))
    assert SysfsBackend(settings).concurrency == 4


@pytest.mark.parametrize(("table", "key", "words"), [
    ({"root": "sys"}, "plugins.sysfs.root", "absolute path"),
    ({"concurrency": 0}, "plugins.sysfs.concurrency", "between 1 and 4096"),
    ({"concurrency": True}, "plugins.sysfs.concurrency", "whole number"),
    ({"rcvbuf": "1KiB"}, "plugins.sysfs.rcvbuf", "64 KiB"),
    ({"netlink": "yes"}, "plugins.sysfs.netlink", "true or false"),
    ({"udev_rules_dirs": "/etc"}, "plugins.sysfs.udev_rules_dirs", "list"),
    ({"rot": "/sys"}, "plugins.sysfs.rot", "unknown key"),
])
def test_invalid_options_are_config_problems(table, key, words):
    problems = hotplugd_check_config({"sysfs": table})
    assert len(problems) == 1 and isinstance(problems[0], ConfigProblem)
    assert problems[0].key == key and words in problems[0].message
    with pytest.raises(ValueError, match=key):
        SysfsBackend.from_options(table)
