"""The ``[plugins.qga]`` table: defaults, guests, and problems that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd import ConfigError
from hotplugd.config import from_mapping
from hotplugd.plugin.manager import make_manager
from hotplugd.plugin.validation import check_plugin_config
from hotplugd_qga import QgaBackend, parse
from hotplugd_qga.settings import GuestDirSettings, GuestSettings

GUESTS = [{"name": "vm1", "qga": "/run/vm1/qga.sock", "qmp": "/run/vm1/qmp.sock", "port_id": "qgaport"},
          {"name": "vm2", "qga": "/run/vm2/qga.sock", "concurrency": 2}]
DIRS = {"glob": "/run/vms/*", "qga": "qga.sock", "qmp": "hotplugd-qmp.sock", "port_id": "qgaport"}


def test_guests_and_defaults() -> None:
    s = parse({"guest": GUESTS, "resize_poll_interval": "50ms", "max_batch": 64})
    assert s.guests == (GuestSettings("vm1", "/run/vm1/qga.sock", "/run/vm1/qmp.sock", "qgaport"),
                        GuestSettings("vm2", "/run/vm2/qga.sock", concurrency=2))
    assert (s.resize_poll_interval, s.max_batch, s.poll_interval, s.verify) == (0.05, 64, 5.0, False)
    assert (s.concurrency, s.parallel_guests, s.discover_interval, s.guest_dirs) == (1, 0, 5.0, ())
    assert [s.concurrency_of(g) for g in s.guests] == [1, 2]
    wide = parse({"guest": GUESTS, "concurrency": 4, "parallel_guests": 3})
    assert [wide.concurrency_of(g) for g in wide.guests] == [4, 2] and wide.parallel_guests == 3


def test_guest_dirs_as_a_table_or_an_array_of_tables() -> None:
    one = parse({"guest_dirs": DIRS, "discover_interval": "2s"})
    assert one.guest_dirs == (GuestDirSettings("/run/vms/*", "qga.sock", "hotplugd-qmp.sock", "qgaport"),)
    assert one.discover_interval == 2.0 and one.guests == ()
    many = parse({"guest_dirs": [{"glob": "/run/a/*/"}, {"glob": "/run/b/*", "qga": "sock/qga", "concurrency": 2}]})
    assert many.guest_dirs == (GuestDirSettings("/run/a/*"), GuestDirSettings("/run/b/*", "sock/qga", concurrency=2))


@pytest.mark.parametrize("table, key, words", [
    ({}, "plugins.qga.guest", "no guest"),
    ({"guest": []}, "plugins.qga.guest", "no guest"),
    ({"guest": {"name": "x"}}, "plugins.qga.guest", "array of tables"),
    ({"guest": [{"name": "vm1"}]}, "plugins.qga.guest[0].qga", "missing"),
    ({"guest": [{"name": "vm1", "qga": "qga.sock"}]}, "plugins.qga.guest[0].qga", "absolute path"),
    ({"guest": [{"name": "vm1", "qga": "/" + "x" * 120}]}, "plugins.qga.guest[0].qga", "at most 107 bytes"),
    ({"guest": [{"name": "vm 1", "qga": "/a"}]}, "plugins.qga.guest[0].name", "without spaces"),
    ({"guest": [{"name": "vm1", "qga": "/a", "qgq": "/b"}]}, "plugins.qga.guest[0].qgq", "unknown key"),
    ({"guest": [{"name": "a", "qga": "/s"}, {"name": "b", "qga": "/s"}]}, "plugins.qga.guest.qga",
     "used by guests 'a' and 'b'"),
    ({"guest": [{"name": "a", "qga": "/s"}, {"name": "a", "qga": "/t"}]}, "plugins.qga.guest.name", "used by guests"),
    ({"guest": GUESTS, "poll_interval": "soon"}, "plugins.qga.poll_interval", "duration"),
    ({"guest": GUESTS, "max_batch": 0}, "plugins.qga.max_batch", "between 1 and 65536"),
    ({"guest": GUESTS, "verify": "yes"}, "plugins.qga.verify", "true or false"),
    ({"guest": GUESTS, "pol_interval": 1}, "plugins.qga.pol_interval", "unknown key"),
    ({"guest": GUESTS, "concurrency": 0}, "plugins.qga.concurrency", "concurrency is per guest"),
    ({"guest": GUESTS, "concurrency": 1000}, "plugins.qga.concurrency", "between 1 and 256"),
    ({"guest": [{"name": "a", "qga": "/s", "concurrency": "2"}]}, "plugins.qga.guest[0].concurrency", "whole number"),
    ({"guest": GUESTS, "parallel_guests": -1}, "plugins.qga.parallel_guests", "between 0 and"),
    ({"guest": GUESTS, "reconnect_interval": "10s", "reconnect_max": "5s"}, "plugins.qga.reconnect_max", "shorter"),
    ({"guest_dirs": {"qga": "qga.sock"}}, "plugins.qga.guest_dirs[0].glob", "missing"),
    ({"guest_dirs": {"glob": "vms/*"}}, "plugins.qga.guest_dirs[0].glob", "absolute pattern"),
    ({"guest_dirs": {"glob": "/vms/*", "qga": "/run/qga.sock"}}, "plugins.qga.guest_dirs[0].qga", "inside each guest"),
    ({"guest_dirs": {"glob": "/vms/*", "qmp": "../qmp.sock"}}, "plugins.qga.guest_dirs[0].qmp", "inside each guest"),
    ({"guest_dirs": {"glob": "/vms/*", "qga": ""}}, "plugins.qga.guest_dirs[0].qga", "empty"),
    ({"guest_dirs": {"glob": "/vms/*", "qmp": "qga.sock"}}, "plugins.qga.guest_dirs[0].qmp", "also the agent"),
    ({"guest_dirs": [{"glob": "/vms/*", "name": "x"}]}, "plugins.qga.guest_dirs[0].name", "unknown key"),
    ({"guest_dirs": "/run/vms/*"}, "plugins.qga.guest_dirs", "table or an array"),
    ({"guest": GUESTS, "discover_interval": "1ms"}, "plugins.qga.discover_interval", "between"),
])
def test_problems_name_the_key(table: dict, key: str, words: str) -> None:
    problems: list = []
    parse(table, problems)
    assert any(p.key == key and words in p.message for p in problems), problems


def test_factory_raises_a_config_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError, match=r"plugins.qga.guest\[0\].qga: missing"):
        QgaBackend.from_options({"guest": [{"name": "vm1"}]})


def _check(data: dict) -> None:
    pm = make_manager(load_entry_points=True, environ={})
    check_plugin_config(pm, from_mapping(data, Path("hotplugd.toml")))


def test_check_config_through_the_entry_point() -> None:
    _check({"backend": "qga", "plugins": {"qga": {"guest": GUESTS}}})
    _check({"backend": "qga", "plugins": {"qga": {"guest_dirs": DIRS}}})  # guests found at run time
    _check({"backend": "simulated"})  # not configured, not used: nothing to say
    _check({"backend": "simulated", "plugins": {"qga": {}}})  # configured for later: guests not required yet
    with pytest.raises(ConfigError, match="plugins.qga.guest: no guest configured"):
        _check({"backend": "qga"})
    with pytest.raises(ConfigError, match="hotplugd.toml"):
        _check({"backend": "simulated", "plugins": {"qga": {"timeout": -1}}})
