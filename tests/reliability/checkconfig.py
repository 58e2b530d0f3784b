"""``hotplugd check-config`` run in-process, fast enough to fuzz, and the property every run must keep.

Shared by ``test_config_fuzz.py`` (hypothesis) and ``bench/fuzz_config.py`` (atheris).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from hotplugd.commands import cli
from hotplugd.errors import EXIT_CONFIG


@contextlib.contextmanager
def reused_plugins() -> Iterator[None]:
    """The parser, the entry-point list and one plugin manager per ``disabled_plugins`` are built once:
    they do not depend on the config file (the manager is only read by check-config) and building
    them is nine tenths of a check-config's time. Reading, parsing and validating run in full."""
    managers = functools.cache(cli.make_manager)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.metadata, "entry_points", functools.cache(importlib.metadata.entry_points))
        mp.setattr(cli, "build_parser", functools.cache(cli.build_parser))
        mp.setattr(cli, "make_manager", lambda disabled=(): managers(tuple(disabled)))
        yield


def check_config(argv: list[str]) -> tuple[int, str]:
    """``hotplugd check-config ARGV``: its exit code and stderr, after asserting the property.

    Any exception escaping ``main()`` propagates (the fuzzers report it); the exit code is 0 or
    78, and 78 comes with one ``hotplugd: error:`` message and no traceback.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check-config", *argv])
    message = err.getvalue()
    assert code in (0, EXIT_CONFIG), message
    assert "Traceback" not in message
    assert code == 0 or message.startswith("hotplugd: error: "), message
    return code, message


def toml_value(value: Any) -> str:
    """``value`` as TOML (a str through JSON's escapes, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def dotted(key: str) -> str:
    """A dotted key with every part quoted (any text is then a key)."""
    return ".".join(json.dumps(part) for part in key.split("."))
