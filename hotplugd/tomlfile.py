"""Reading a config's TOML without a traceback: a file of bounded size in UTF-8, nesting bounded
before tomllib recurses, and ``--set KEY=VALUE`` overrides. Every failure is a ConfigError naming
the file (or the flag) and saying how to fix it; :mod:`hotplugd.config` then validates the keys."""

from __future__ import annotations

import os
import re
import reprlib
import stat
import tomllib
from pathlib import Path
from typing import Any

from hotplugd.errors import ConfigError

#: A config file larger than this is not a config (the documented reference is 6 KiB).
MAX_FILE_BYTES = 1 << 20
#: Tables and arrays nested deeper than this are refused (the reference nests 3 deep);
#: checked on the text before tomllib, which recurses once per level, parses it.
MAX_DEPTH = 16

#: Values shown in messages are cut to this many characters (a 1 MiB string stays out of the log).
SHOW = reprlib.Repr()
SHOW.maxstring = SHOW.maxother = 60
_show = SHOW

DEEP_HINT = "no hotplugd setting nests this deep; is a bracket unclosed?"

# A token of TOML's that brackets can hide in (strings, comments), or a bracket.
_TOKENS = re.compile("|".join((
    r'"""(?:\\.|[^\\])*?"""',  # multi-line basic string
    r"'''.*?'''",  # multi-line literal string
    r'"(?:\\.|[^"\\\n])*"',  # basic string
    r"'[^'\n]*'",  # literal string
    r"#[^\n]*",  # comment
    r"[\[\]{}]",
)), re.S)

def check_file_permissions(path: Path, st: os.stat_result) -> None:
    """When running as root, refuse a config file that other users can write."""
    if os.geteuid() != 0:
        return
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) or st.st_uid != 0:
        raise ConfigError(
            f"refusing {path}: it is writable by users other than root "
            f"(mode {stat.filemode(st.st_mode)}, uid {st.st_uid})",
            hint=f"chown root:root {path} && chmod 644 {path}",
        )


def read_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8 (TOML's only encoding)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ConfigError(f"config file {path} is {kind}", hint="pass --config with a TOML file")
        check_file_permissions(path, st)
        with path.open("rb") as fh:  # the file may grow after stat(): read at most one byte past the cap
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="pass --config or create it") from None
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_FILE_BYTES} bytes",
                          hint="a hotplugd config is a few KiB; is this the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path} is not UTF-8: byte {raw[exc.start]:#04x} at line {line} (offset {exc.start})",
                          hint="TOML files are UTF-8; convert it, e.g. with iconv -t UTF-8") from None


def nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest outside strings and comments: a cheap scan run before tomllib,
    which recurses once per level (5,000 levels: RecursionError)."""
    depth = deepest = 0
    for token in _TOKENS.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth = max(0, depth - 1)
    return deepest


def refuse_deep(text: str, where: str) -> None:
    if nesting(text) > MAX_DEPTH:
        raise ConfigError(f"{where} nests tables or arrays deeper than {MAX_DEPTH}", hint=DEEP_HINT)


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """tomllib's parse of ``text``, every failure a ConfigError naming ``where``."""
    refuse_deep(text, where)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(f"{where} is not valid TOML: {exc}", hint="numbers in a config fit in 64 bits") from None
    except RecursionError:  # the scan above missed a way to nest: still no traceback
        raise ConfigError(f"{where} nests too deep to parse", hint=DEEP_HINT) from None


def read_toml(path: Path) -> dict[str, Any]:
    return parse_toml(read_text(path), str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``scheduler.settle=0.1`` → (["scheduler", "settle"], 0.1); values are TOML, else strings."""
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set {_show.repr(text)}: expected KEY=VALUE, the key's parts joined by dots",
                          hint="e.g. --set scheduler.settle=0.1")
    refuse_deep(raw, f"--set {'.'.join(path)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, RecursionError):  # not TOML: the text itself (a RecursionError despite the scan too)
        value = raw
    return path, value


def merge_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a table",
                              hint=f"{part} holds a value; set a key of a table")
    node[path[-1]] = value
