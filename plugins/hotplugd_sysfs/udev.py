"""udev rules that online memory blocks themselves: found by file and line.

A rule competes with hotplugd when, for a memory device, it assigns the
``state`` or ``online`` attribute (``ATTR{state}="online"``) or runs a
command that writes one (``echo online > /sys$devpath/state``, ``chmem``).
The memory context is the rule line itself naming memory, or an enclosing
``SUBSYSTEM!="memory", GOTO="label"`` guard up to its ``LABEL``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_ASSIGNS_ATTR = re.compile(r"\bATTR\{(state|online)\}\s*(?:\+|:)?=(?!=)")
_RUN_WRITES = re.compile(r"\b(?:RUN|PROGRAM|IMPORT\{program\})\s*(?:\+|:)?=(?!=)\s*\"[^\"]*"
                         r"(?:>\s*\S*/(?:state|online)\b|\bchmem\b)")
_MEMORY = re.compile(r"memory", re.IGNORECASE)
_GUARD = re.compile(r"SUBSYSTEM\s*!=\s*\"memory\"[^#]*\bGOTO\s*=\s*\"([^\"]+)\"")
_LABEL = re.compile(r"\bLABEL\s*=\s*\"([^\"]+)\"")


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule line that writes a memory block's state."""

    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"udev rule {self.path}:{self.line} onlines memory blocks itself: {self.text}"


def rule_files(dirs: Iterable[str | Path]) -> list[Path]:
    """The rules files udev would read: ``*.rules`` by name, an earlier directory masking a later one.

    A file that is empty or a link to ``/dev/null`` masks without adding rules.
    """
    chosen: dict[str, Path] = {}
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(".rules") and name not in chosen:
                chosen[name] = Path(directory) / name
    return [chosen[name] for name in sorted(chosen)]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, joined text) for each rule, with ``\\`` continuations joined."""
    start, parts = 0, []
    for number, raw in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        yield start, " ".join(p.strip() for p in parts)
        parts = []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def scan_rules(path: Path, text: str) -> list[RuleHit]:
    """The lines of one rules file that online memory blocks."""
    hits: list[RuleHit] = []
    guards: set[str] = set()
    for number, line in logical_lines(text):
        if not line or line.startswith("#"):
            continue
        label = _LABEL.search(line)
        if label:
            guards.discard(label.group(1))
        guard = _GUARD.search(line)
        if guard:
            guards.add(guard.group(1))
            continue
        writes = _ASSIGNS_ATTR.search(line) or _RUN_WRITES.search(line)
        if writes and (guards or _MEMORY.search(line)):
            hits.append(RuleHit(path, number, line if len(line) <= 160 else line[:157] + "..."))
    return hits


def find_rules(dirs: Iterable[str | Path]) -> list[RuleHit]:
    """Every memory-onlining rule in the effective rules files of ``dirs``."""
    hits: list[RuleHit] = []
    for path in rule_files(dirs):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # a dangling link, /dev/null or unreadable: no rules from it
        hits.extend(scan_rules(path, text))
    return hits
