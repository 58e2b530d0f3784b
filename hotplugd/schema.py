"""One way to read a config table: a dataclass whose fields say how each key is parsed.

The core's tables (``hotplugd.config``) and every plugin's ``[plugins.<name>]`` table are read the
same way. A plugin declares its settings as a frozen dataclass whose fields are ``setting(...)``::

    from dataclasses import dataclass
    from hotplugd import read_table, setting, whole, duration

    @dataclass(frozen=True)
    class Settings:
        concurrency: int = setting(1, whole(1, 64), "blocks onlined at once")
        timeout: float = setting(5.0, duration(0.01, 600), "one request")

    def hotplugd_check_config(tables):
        problems = []
        read_table(Settings, tables.get("mine", {}), "plugins.mine", problems)
        return problems

``read_table`` reports an unknown key (with the closest known one), a missing required key (a field
without a default) and each value its parser refuses, as a ``ConfigProblem`` naming the dotted key with a
hint (the parser's, else the key's help and default); the core prints them with the file's name and exits
78. Without a ``problems`` list it raises them as one ``ConfigError`` (also a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hotplugd.errors import ConfigError
from hotplugd.tomlfile import SHOW as _show
from hotplugd.units import format_bytes, parse_duration, parse_size

#: Bytes of a 64-bit physical address space.
MAX_BYTES = 1 << 64
#: A day: deferring or waiting longer than that leaves hot-added memory offline for good.
MAX_SECONDS = 86_400
_DAY = "a day: waiting longer leaves hot-added memory offline for good"


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: the dotted key, what is wrong, and how to fix it."""

    key: str
    message: str
    hint: str = ""


class OutOfBounds(ValueError):
    """A value of the right kind past its bound; ``hint`` says why the bound is there."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class TableError(ConfigError, ValueError):
    """The problems of a table read without a list to collect them: exit 78 like any config error."""


def setting(default: Any = dataclasses.MISSING, parse: Callable[..., Any] | None = None, help: str = "", *,
            key: str | None = None) -> Any:
    """A dataclass field read from the key ``key`` (default: the field's name) by ``parse``, which returns the
    value or raises ValueError saying what is wrong (an OutOfBounds carries its own hint). No default: the key
    is required. A parser marked ``@nested`` is given ``(value, dotted_key, problems)`` and reports itself."""
    metadata = {"parse": parse, "help": help, **({"key": key} if key else {})}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def nested(parse: Callable[[Any, str, list[ConfigProblem]], Any]) -> Callable[[Any, str, list[ConfigProblem]], Any]:
    """Mark a parser that reads a sub-table itself: called as ``parse(value, dotted_key, problems)``."""
    parse.nested = True  # type: ignore[attr-defined]
    return parse


def _bounded(value: Any, lo: float, hi: float | None, why: str, show: Callable[[Any], str] = str) -> Any:
    """``value`` if ``lo <= value <= hi`` (never NaN), else OutOfBounds with ``why`` as its hint."""
    if hi is None:
        if not lo <= value:
            raise OutOfBounds(f"must be at least {show(lo)}, got {_show.repr(value)}", why)
    elif not lo <= value <= hi:
        raise OutOfBounds(f"must be between {show(lo)} and {show(hi)}, got {_show.repr(value)}", why)
    return value


def one_of(*choices: Any) -> Callable[[object], Any]:
    """One of ``choices``."""
    def parse(value: object) -> Any:
        if value not in choices or isinstance(value, bool) and not any(c is value for c in choices):
            raise ValueError(f"expected one of {', '.join(map(str, choices))}; got {_show.repr(value)}")
        return value

    return parse


def number(lo: float, hi: float | None = None, kind: type = float, why: str = "", *,
           what: str = "a number") -> Callable[[object], Any]:
    """A number (``kind`` int: a whole one) from ``lo`` to ``hi`` (None: no upper bound)."""
    def parse(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected {what}, got {_show.repr(value)}")
        if kind is int and not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_show.repr(value)}")
        return kind(_bounded(value, lo, hi, why))

    return parse


def whole(lo: int, hi: int | None = None, why: str = "") -> Callable[[object], int]:
    """A whole number from ``lo`` to ``hi`` (None: no upper bound)."""
    return number(lo, hi, int, why, what="a whole number")


def _unit(parse: Callable[[object], Any], lo: float, hi: float | None, why: str,
          show: Callable[[Any], str]) -> Callable[[object], Any]:
    def bounded(value: object) -> Any:
        try:
            return _bounded(parse(value), lo, hi, why, show)
        except OverflowError:  # "1e999GiB": a float past its range, made an int
            raise OutOfBounds(f"must be between {show(lo)} and {show(hi)}, got {_show.repr(value)}", why) from None

    return bounded


def size(lo: int = 0, hi: int | None = MAX_BYTES, why: str | None = None, *,
         human: bool = False) -> Callable[[object], int]:
    """A size in bytes ("8 MiB", 4096) from ``lo`` to ``hi``; ``human``: the bounds said in KiB, MiB...
    ``why``: the hint past a bound (default: the key's help, or the 64-bit address space at ``MAX_BYTES``)."""
    if why is None:
        why = "2^64 bytes: a 64-bit physical address space" if hi == MAX_BYTES else ""
    return _unit(parse_size, lo, hi, why, _iec if human else str)


def _iec(n: int) -> str:
    """``n`` bytes in the largest binary unit that divides it (65536: "64 KiB")."""
    for shift, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return format_bytes(n) if n >= 1024 else f"{n} B"


def duration(lo: float = 0, hi: float | None = MAX_SECONDS, why: str | None = None) -> Callable[[object], float]:
    """A duration in seconds ("100ms", 2.5) from ``lo`` to ``hi`` (default: a day, ``MAX_SECONDS``)."""
    if why is None:
        why = _DAY if hi == MAX_SECONDS else ""
    return _unit(parse_duration, lo, hi, why, str)


def boolean(value: object) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show.repr(value)}")
    return value


def text(value: object) -> str:
    """Any string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show.repr(value)}")
    return value


def string_list(value: object) -> list[str]:
    """A list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {_show.repr(value)}")
    return list(value)


def _key_help(f: dataclasses.Field) -> str:
    """What a key is and its default, for an error about it (no file to look up: it may not be installed)."""
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return f"{_key(f)}: {f.metadata.get('help', '')}"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return f"{_key(f)}: {f.metadata.get('help', '')}; default {_show.repr(default)}"


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _clip(message: str) -> str:
    return message if len(message) <= 200 else message[:200] + "..."  # hotplugd.units repeats the value whole


def read_fields(cls: type, table: Mapping[str, Any], prefix: str, problems: list[ConfigProblem],
                hint: str = "") -> tuple[dict[str, Any], bool]:
    """The fields of ``cls`` read from ``table`` (keys ``prefix.key``; refused values left out), problems appended,
    and whether all is well (no refused value, no unknown or missing key)."""
    if not isinstance(table, Mapping):
        problems.append(ConfigProblem(prefix, f"expected a table, got {_show.repr(table)}", hint or f"[{prefix}]"))
        return {}, False
    fields = {_key(f): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        f = fields.get(key)
        if f is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            where = f"{prefix}." if prefix else ""
            problems.append(ConfigProblem(dotted, "unknown key", f"did you mean {where}{close[0]}?" if close
                                          else f"known keys: {', '.join(fields)}"))
            continue
        parse = f.metadata.get("parse")
        if parse is None and isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            inner, _ok = read_fields(f.default_factory, value, dotted, problems, hint)
            kwargs[f.name] = f.default_factory(**inner)
        elif getattr(parse, "nested", False):
            kwargs[f.name] = parse(value, dotted, problems)
        else:
            try:
                kwargs[f.name] = parse(value)
            except ValueError as exc:
                problems.append(ConfigProblem(dotted, _clip(str(exc)),
                                              getattr(exc, "hint", "") or hint or _key_help(f)))
    for key, f in fields.items():
        if key not in table and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(ConfigProblem(f"{prefix}.{key}", "missing", hint or _key_help(f)))
    return kwargs, len(problems) == before


def raise_table_problems(problems: list[ConfigProblem], prefix: str, hint: str = "") -> None:
    """One TableError (a ConfigError, exit 78) listing every problem of the table ``prefix``."""
    if problems:
        lines = "\n  ".join(f"{p.key}: {p.message}" for p in problems)
        raise TableError(f"invalid [{prefix}] table:\n  {lines}", hint=hint or None)


def read_table(cls: type, table: Mapping[str, Any], prefix: str, problems: list[ConfigProblem] | None = None, *,
               hint: str = "", check: Callable[[Any], Iterable[ConfigProblem]] | None = None) -> Any:
    """An instance of the dataclass ``cls`` from ``table``: each field ``setting(...)`` read from its key.

    Every problem names its dotted key (``prefix.key``) and carries a hint (the parser's OutOfBounds hint,
    else ``hint``, else the key's help and default). Refused values keep their defaults.
    ``check(instance)`` adds the problems of values valid alone that contradict each other. With
    ``problems`` the problems are appended to it; without, they are raised as one TableError.
    """
    collect: list[ConfigProblem] = [] if problems is None else problems
    before = len(collect)
    kwargs, _ok = read_fields(cls, table, prefix, collect, hint)
    instance = cls(**kwargs)
    if check is not None:
        collect.extend(check(instance))
    if problems is None:
        raise_table_problems(collect[before:], prefix, hint)
    return instance


def tables_of(cls: type, example: str = "", *, one: bool = False,
              check: Callable[[Any, str], Iterable[ConfigProblem]] | None = None) -> Callable[..., tuple[Any, ...]]:
    """A nested parser of an array of tables ``[[prefix.key]]``, each an instance of ``cls`` (``one``: a single
    table is taken as an array of one). Entries with problems are left out, each problem named
    ``key[i].subkey``; ``check(instance, "key[i]")`` adds cross-field problems of each entry."""
    @nested
    def parse(value: Any, dotted: str, problems: list[ConfigProblem]) -> tuple[Any, ...]:
        items = [value] if one and isinstance(value, Mapping) else value
        if not isinstance(items, list):
            what = "a table or an array of tables" if one else f"an array of tables [[{dotted}]]"
            problems.append(ConfigProblem(dotted, f"expected {what}", f"e.g. {example}" if example else ""))
            return ()
        out = []
        for i, item in enumerate(items):
            key = f"{dotted}[{i}]"
            if not isinstance(item, Mapping):
                problems.append(ConfigProblem(key, "expected a table", f"e.g. {example}" if example else ""))
                continue
            kwargs, ok = read_fields(cls, item, key, problems, f"e.g. {example}" if example else "")
            if ok:
                instance = cls(**kwargs)
                if check is not None:
                    problems.extend(check(instance, key))
                out.append(instance)
        return tuple(out)

    return parse


def describe_table(cls: type, prefix: str) -> list[tuple[str, Any, str]]:
    """Every key of ``cls`` with a default: (dotted key, default, help). For docs and their tests."""
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.metadata.get("internal") or required:
            continue
        value = _default(f)
        if dataclasses.is_dataclass(value) and f.metadata.get("parse") is None:
            rows.extend(describe_table(type(value), f"{prefix}{_key(f)}."))
        else:
            rows.append((f"{prefix}{_key(f)}", value, f.metadata.get("help", "")))
    return rows
