"""hotplugd's one way to read a config table (hotplugd.read_table), as a third-party plugin uses it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import hotplugd
from hotplugd import (
    ConfigError,
    ConfigProblem,
    boolean,
    duration,
    one_of,
    read_table,
    setting,
    size,
    tables_of,
    whole,
)


@dataclass(frozen=True)
class Peer:
    name: str = setting(parse=hotplugd.text, help="the peer's name")
    weight: int = setting(1, whole(1, 10), "its share")


@dataclass(frozen=True)
class Settings:
    mode: str = setting("fast", one_of("fast", "safe"), "how to online")
    batch: int = setting(8, whole(1, 64), "blocks a call")
    timeout: float = setting(5.0, duration(0.1, 60), "one request")
    buffer: int = setting(1 << 20, size(64 << 10, 1 << 30, human=True), "bytes")
    verbose: bool = setting(False, boolean, "say more")
    peers: tuple[Peer, ...] = setting((), tables_of(Peer, '[[plugins.mine.peer]] name = "a"'), "peers", key="peer")


def _problems(table: dict, **kw) -> list[ConfigProblem]:
    found: list[ConfigProblem] = []
    read_table(Settings, table, "plugins.mine", found, **kw)
    return found


def test_the_api_is_public():
    for name in ("read_table", "setting", "tables_of", "nested", "whole", "number", "one_of", "size", "duration",
                 "boolean", "text", "string_list", "describe_table", "ConfigProblem", "OutOfBounds"):
        assert name in hotplugd.__all__


def test_defaults_and_values():
    assert read_table(Settings, {}, "plugins.mine") == Settings()
    s = read_table(Settings, {"mode": "safe", "batch": 2, "timeout": "250ms", "buffer": "1 MiB", "verbose": True,
                              "peer": [{"name": "a"}, {"name": "b", "weight": 3}]}, "plugins.mine")
    assert (s.mode, s.batch, s.timeout, s.buffer, s.verbose) == ("safe", 2, 0.25, 1 << 20, True)
    assert s.peers == (Peer("a"), Peer("b", 3))


@pytest.mark.parametrize(("table", "key", "words", "hint"), [
    ({"mdoe": "fast"}, "plugins.mine.mdoe", "unknown key", "did you mean plugins.mine.mode?"),
    ({"mode": "slow"}, "plugins.mine.mode", "expected one of fast, safe", "mode: how to online; default 'fast'"),
    ({"batch": 0}, "plugins.mine.batch", "between 1 and 64", "batch: blocks a call"),
    ({"batch": True}, "plugins.mine.batch", "expected a whole number", "batch"),
    ({"timeout": "90s"}, "plugins.mine.timeout", "between 0.1 and 60", "timeout: one request; default 5.0"),
    ({"timeout": "soon"}, "plugins.mine.timeout", "expected a duration", "timeout: one request"),
    ({"buffer": "1KiB"}, "plugins.mine.buffer", "between 64 KiB and 1 GiB", "buffer: bytes"),
    ({"verbose": "yes"}, "plugins.mine.verbose", "true or false", "verbose"),
    ({"peer": {"name": "a"}}, "plugins.mine.peer", "array of tables", "e.g. [[plugins.mine.peer]]"),
    ({"peer": [{"weight": 2}]}, "plugins.mine.peer[0].name", "missing", "e.g. [[plugins.mine.peer]]"),
    ({"peer": [{"name": "a", "wieght": 2}]}, "plugins.mine.peer[0].wieght", "unknown key", "did you mean"),
])
def test_each_problem_names_its_key_with_a_hint(table, key, words, hint):
    found = _problems(table)
    assert len(found) == 1, found
    assert found[0].key == key and words in found[0].message and hint in found[0].hint, found[0]


def test_a_bad_entry_is_left_out_and_good_values_kept():
    found: list[ConfigProblem] = []
    s = read_table(Settings, {"batch": 2, "mode": 3, "peer": [{"name": "a"}, {"name": 1}]}, "plugins.mine", found)
    assert [p.key for p in found] == ["plugins.mine.mode", "plugins.mine.peer[1].name"]
    assert (s.batch, s.mode, s.peers) == (2, "fast", (Peer("a"),))


def test_a_check_sees_the_whole_table_and_the_table_hint_wins_over_the_key_help():
    def check(s: Settings) -> list[ConfigProblem]:
        return [ConfigProblem("plugins.mine.batch", "too big for safe")] if s.mode == "safe" and s.batch > 4 else []

    found = _problems({"mode": "safe", "batch": 8, "verbose": 1}, check=check, hint="see docs/mine.md")
    assert [(p.key, p.message, p.hint) for p in found] == [
        ("plugins.mine.verbose", "expected true or false, got 1", "see docs/mine.md"),
        ("plugins.mine.batch", "too big for safe", "")]


def test_without_a_list_the_problems_are_one_config_error_exit_78():
    with pytest.raises(ConfigError, match=r"invalid \[plugins.mine\] table:\n  plugins.mine.batch: must be") as err:
        read_table(Settings, {"batch": 99, "mode": "x"}, "plugins.mine")
    assert err.value.exit_code == 78 and isinstance(err.value, ValueError) and "plugins.mine.mode" in str(err.value)
    with pytest.raises(ConfigError, match="plugins.mine: expected a table"):
        read_table(Settings, [1], "plugins.mine")


def test_describe_table_lists_every_key_with_its_default():
    rows = {key: default for key, default, _help in hotplugd.describe_table(Settings, "plugins.mine.")}
    assert rows == {"plugins.mine.mode": "fast", "plugins.mine.batch": 8, "plugins.mine.timeout": 5.0,
                    "plugins.mine.buffer": 1 << 20, "plugins.mine.verbose": False, "plugins.mine.peer": ()}
