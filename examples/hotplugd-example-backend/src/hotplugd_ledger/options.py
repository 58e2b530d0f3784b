"""The plugin's config table, ``[plugins.ledger]``, parsed and validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotplugd import ConfigProblem, parse_size

NAME = "ledger"
KEYS = ("host", "concurrency", "kernel_first")


@dataclass(frozen=True)
class Options:
    host: Path | None = None  # the JSON host file (required by the backend)
    concurrency: int = 1  # online calls that may run at once
    kernel_first: int | None = None  # bytes per node in kernel zones before ZONE_MOVABLE (the policy)


def parse(table: Mapping[str, Any], problems: list[ConfigProblem]) -> Options:
    """Options from ``table``; each bad key appends a problem naming ``plugins.ledger.<key>``."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"plugins.{NAME}.{key}"
        if key == "host":
            if not isinstance(value, str) or not value:
                problems.append(ConfigProblem(dotted, f"expected a file path, got {value!r}"))
                continue
            values["host"] = Path(value)
        elif key == "concurrency":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(ConfigProblem(dotted, f"expected a whole number of at least 1, got {value!r}"))
                continue
            values["concurrency"] = value
        elif key == "kernel_first":
            try:
                values["kernel_first"] = parse_size(value)
            except ValueError as exc:
                problems.append(ConfigProblem(dotted, str(exc), 'e.g. kernel_first = "2GiB"'))
        else:
            problems.append(ConfigProblem(dotted, "unknown key", f"known keys: {', '.join(KEYS)}"))
    return Options(**values)
