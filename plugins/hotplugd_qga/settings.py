"""The qga backend's settings: the ``[plugins.qga]`` table, validated (every problem names its key)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigError, ConfigProblem

from .validators import (
    HINT, boolean, concurrency, duration, glob_pattern, name, optional_socket, port_id, relative_path, socket,
    whole,
)


@dataclass(frozen=True)
class GuestSettings:
    """One guest: its name (its domain), its agent's socket and (optionally) the daemon's own QMP monitor."""

    name: str
    qga: str  # QEMU's chardev socket of the guest's org.qemu.guest_agent.0 port
    qmp: str = ""  # a QMP monitor for the daemon alone (events); empty: poll only
    port_id: str = ""  # the agent port's ``id=``: its VSERPORT_CHANGE events say the agent is up or down
    concurrency: int | None = None  # blocks its kernel onlines at once; None: the table's ``concurrency``


@dataclass(frozen=True)
class GuestDirSettings:
    """A directory per guest, as a hypervisor manager lays them out: ``glob`` matches the directories.

    A guest is present while its directory matches and its ``qga`` socket exists;
    its name is the directory's name.
    """

    glob: str  # absolute pattern of the guests' directories, e.g. /run/vms/*
    qga: str = "qga.sock"  # the agent's socket, relative to each directory
    qmp: str = ""  # the daemon's QMP monitor, relative to each directory (empty: poll only)
    port_id: str = ""
    concurrency: int | None = None


@dataclass(frozen=True)
class Settings:
    guests: tuple[GuestSettings, ...] = ()
    guest_dirs: tuple[GuestDirSettings, ...] = ()
    discover_interval: float = 5.0  # re-read guest_dirs this often
    poll_interval: float = 5.0  # fallback poll of every guest's block list
    resize_poll_interval: float = 0.1  # poll while memory is being added (QGA.md: 0.76 s against 4 s)
    resize_quiet: float = 1.5  # adding is over when no block appeared and no event came for this long
    timeout: float = 5.0  # one agent request (sync, list, vCPUs, meminfo)
    online_timeout_per_block: float = 0.1  # added to ``timeout`` for each block of a guest-set-memory-blocks
    reconnect_interval: float = 1.0  # first wait before talking again to an agent (or monitor) that failed
    reconnect_max: float = 30.0  # the wait doubles after each further failure, up to this
    max_batch: int = 256  # blocks in one guest-set-memory-blocks
    concurrency: int = 1  # per guest: blocks its kernel onlines at once (mainline: 1)
    parallel_guests: int = 0  # guests running a final phase at once (0: all)
    verify: bool = False  # re-read the block list after each batch (a listing costs ~50 ms under TCG)

    def concurrency_of(self, guest: GuestSettings | None) -> int:
        """The real concurrency inside ``guest`` (the table's default for an unknown one)."""
        return (guest.concurrency if guest is not None else None) or self.concurrency


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "discover_interval": duration(0.1, 3600),
    "poll_interval": duration(0.01, 3600),
    "resize_poll_interval": duration(0.01, 60),
    "resize_quiet": duration(0.0, 600),
    "timeout": duration(0.01, 600),
    "online_timeout_per_block": duration(0.0, 60),
    "reconnect_interval": duration(0.01, 600),
    "reconnect_max": duration(0.01, 3600),
    "max_batch": whole(1, 65536),
    "concurrency": concurrency,
    "parallel_guests": whole(0, 65536),
    "verify": boolean,
}
_GUEST_PARSERS: dict[str, Callable[[Any], Any]] = {
    "name": name, "qga": socket, "qmp": optional_socket, "port_id": port_id, "concurrency": concurrency,
}
_DIR_PARSERS: dict[str, Callable[[Any], Any]] = {
    "glob": glob_pattern, "qga": relative_path, "qmp": relative_path, "port_id": port_id, "concurrency": concurrency,
}
_TABLES = ("guest", "guest_dirs")


def _problem(key: str, message: str, hint: str = HINT) -> ConfigProblem:
    return ConfigProblem(key, message, hint)


def _table(prefix: str, table: Any, parsers: Mapping[str, Callable[[Any], Any]], required: tuple[str, ...],
           example: str, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    """One sub-table's values, parsed; None (problems appended) when anything is wrong."""
    if not isinstance(table, dict):
        problems.append(_problem(prefix, "expected a table", f"e.g. {example}"))
        return None
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        parser = parsers.get(key)
        if parser is None:
            problems.append(_problem(f"{prefix}.{key}", "unknown key", f"known keys: {', '.join(parsers)}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            problems.append(_problem(f"{prefix}.{key}", str(exc)))
    missing = [k for k in required if k not in table]
    for key in missing:
        problems.append(_problem(f"{prefix}.{key}", "missing", f"e.g. {example}"))
    return None if missing or len(kwargs) < len(table) else kwargs


def _guests(value: Any, problems: list[ConfigProblem]) -> tuple[GuestSettings, ...]:
    if not isinstance(value, list):
        problems.append(_problem("plugins.qga.guest", "expected an array of tables [[plugins.qga.guest]]"))
        return ()
    example = '[[plugins.qga.guest]] name = "vm1" qga = "/run/vm1/qga.sock"'
    guests = [GuestSettings(**kw) for i, table in enumerate(value)
              if (kw := _table(f"plugins.qga.guest[{i}]", table, _GUEST_PARSERS, ("name", "qga"), example,
                               problems)) is not None]
    for attr in ("name", "qga", "qmp"):
        seen: dict[str, str] = {}
        for g in guests:
            key = getattr(g, attr)
            if key and key in seen:
                problems.append(_problem(f"plugins.qga.guest.{attr}", f"{key!r} is used by guests {seen[key]!r} and {g.name!r}",
                                         "each guest needs its own name and sockets (an agent serves one client)"))
            seen.setdefault(key, g.name)
    return tuple(guests)


def _guest_dirs(value: Any, problems: list[ConfigProblem]) -> tuple[GuestDirSettings, ...]:
    tables = [value] if isinstance(value, dict) else value
    if not isinstance(tables, list):
        problems.append(_problem("plugins.qga.guest_dirs", "expected a table or an array of tables",
                                 'e.g. guest_dirs = { glob = "/run/vms/*", qga = "qga.sock" }'))
        return ()
    example = '[[plugins.qga.guest_dirs]] glob = "/run/vms/*" qga = "qga.sock"'
    dirs = [GuestDirSettings(**kw) for i, table in enumerate(tables)
            if (kw := _table(f"plugins.qga.guest_dirs[{i}]", table, _DIR_PARSERS, ("glob",), example,
                             problems)) is not None]
    for i, d in enumerate(dirs):
        if not d.qga:
            problems.append(_problem(f"plugins.qga.guest_dirs[{i}].qga", "empty", "the agent's socket in each directory"))
        if d.qmp and d.qmp == d.qga:
            problems.append(_problem(f"plugins.qga.guest_dirs[{i}].qmp", f"{d.qmp!r} is also the agent's socket",
                                     "the agent and the QMP monitor are two sockets"))
    return tuple(dirs)


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None, *,
          require_guests: bool = True) -> Settings:
    """Settings from the plugin's table. Problems are appended, or raised as one ConfigError when not collected."""
    collect: list[ConfigProblem] = [] if problems is None else problems
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "guest":
            kwargs["guests"] = _guests(value, collect)
            continue
        if key == "guest_dirs":
            kwargs["guest_dirs"] = _guest_dirs(value, collect)
            continue
        parser = _PARSERS.get(key)
        if parser is None:
            collect.append(_problem(f"plugins.qga.{key}", "unknown key", f"known keys: {', '.join((*_TABLES, *_PARSERS))}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            collect.append(_problem(f"plugins.qga.{key}", str(exc)))
    if require_guests and not table.get("guest") and not table.get("guest_dirs"):
        collect.append(_problem("plugins.qga.guest", "no guest configured",
                                'add [[plugins.qga.guest]] tables with name = "..." and qga = "/path/to/qga.sock", '
                                'or guest_dirs = { glob = "/run/vms/*", qga = "qga.sock" }'))
    if kwargs.get("reconnect_max", Settings.reconnect_max) < kwargs.get("reconnect_interval", Settings.reconnect_interval):
        collect.append(_problem("plugins.qga.reconnect_max", "is shorter than reconnect_interval",
                                "the wait starts at reconnect_interval and doubles up to reconnect_max"))
    if problems is None and collect:
        lines = "\n  ".join(f"{p.key}: {p.message}" for p in collect)
        raise ConfigError(f"invalid [plugins.qga] table:\n  {lines}", hint=HINT)
    return Settings(**kwargs)


__all__ = ["GuestDirSettings", "GuestSettings", "Settings", "parse"]
