"""The ``[plugins.qga]`` table: defaults, guests, and problems that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd import ConfigError
from hotplugd.config import from_mapping
from hotplugd.plugins import make_manager
from hotplugd.validation import check_plugin_config
from hotplugd_qga import QgaBackend, parse
from hotplugd_qga.settings import GuestSettings

GUESTS = [{"name": "vm1", "qga": "/run/vm1/qga.sock", "qmp": "/run/vm1/qmp.sock", "port_id": "qgaport"},
          {"name": "vm2", "qga": "/run/vm2/qga.sock"}]


def test_guests_and_defaults() -> None:
    s = parse({"guest": GUESTS, "resize_poll_interval": "50ms", "max_batch": 64})
    assert s.guests == (GuestSettings("vm1", "/run/vm1/qga.sock", "/run/vm1/qmp.sock", "qgaport"),
                        GuestSettings("vm2", "/run/vm2/qga.sock"))
    assert (s.resize_poll_interval, s.max_batch, s.poll_interval, s.verify) == (0.05, 64, 5.0, False)
    assert s.declared_concurrency == 2
    assert parse({"guest": GUESTS, "concurrency": 4}).declared_concurrency == 4


@pytest.mark.parametrize("table, key, words", [
    ({}, "plugins.qga.guest", "no guest"),
    ({"guest": []}, "plugins.qga.guest", "no guest"),
    ({"guest": {"name": "x"}}, "plugins.qga.guest", "array of tables"),
    ({"guest": [{"name": "vm1"}]}, "plugins.qga.guest[0].qga", "missing"),
    ({"guest": [{"name": "vm1", "qga": "qga.sock"}]}, "plugins.qga.guest[0].qga", "absolute path"),
    ({"guest": [{"name": "vm1", "qga": "/" + "x" * 120}]}, "plugins.qga.guest[0].qga", "at most 107 bytes"),
    ({"guest": [{"name": "vm 1", "qga": "/a"}]}, "plugins.qga.guest[0].name", "without spaces"),
    ({"guest": [{"name": "vm1", "qga": "/a", "qgq": "/b"}]}, "plugins.qga.guest[0].qgq", "unknown key"),
    ({"guest": [{"name": "a", "qga": "/s"}, {"name": "b", "qga": "/s"}]}, "plugins.qga.guest.qga", "used by guests 'a' and 'b'"),
    ({"guest": [{"name": "a", "qga": "/s"}, {"name": "a", "qga": "/t"}]}, "plugins.qga.guest.name", "used by guests"),
    ({"guest": GUESTS, "poll_interval": "soon"}, "plugins.qga.poll_interval", "duration"),
    ({"guest": GUESTS, "max_batch": 0}, "plugins.qga.max_batch", "between 1 and 65536"),
    ({"guest": GUESTS, "verify": "yes"}, "plugins.qga.verify", "true or false"),
    ({"guest": GUESTS, "pol_interval": 1}, "plugins.qga.pol_interval", "unknown key"),
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
    _check({"backend": "simulated"})  # not configured, not used: nothing to say
    _check({"backend": "simulated", "plugins": {"qga": {}}})  # configured for later: guests not required yet
    with pytest.raises(ConfigError, match="plugins.qga.guest: no guest configured"):
        _check({"backend": "qga"})
    with pytest.raises(ConfigError, match="hotplugd.toml"):
        _check({"backend": "simulated", "plugins": {"qga": {"timeout": -1}}})
