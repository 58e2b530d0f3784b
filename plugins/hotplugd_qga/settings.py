"""The qga backend's settings: the ``[plugins.qga]`` table, validated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigError, ConfigProblem
from hotplugd.units import parse_duration

HINT = "the keys are documented in docs/qga.md and `python -m pydoc hotplugd_qga`"
#: A unix socket path must fit ``sockaddr_un.sun_path`` (108 bytes with the NUL).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class GuestSettings:
    """One guest: its name, its agent's socket and (optionally) the daemon's own QMP monitor."""

    name: str
    qga: str  # QEMU's chardev socket of the guest's org.qemu.guest_agent.0 port
    qmp: str = ""  # a QMP monitor for the daemon alone (events); empty: poll only
    port_id: str = ""  # the agent port's ``id=``: its VSERPORT_CHANGE events say the agent is up or down


@dataclass(frozen=True)
class Settings:
    guests: tuple[GuestSettings, ...] = ()
    poll_interval: float = 5.0  # fallback poll of every guest's block list
    resize_poll_interval: float = 0.1  # poll while memory is being added (QGA.md: 0.76 s against 4 s)
    resize_quiet: float = 1.5  # adding is over when no block appeared and no event came for this long
    timeout: float = 5.0  # one agent request (sync, list, vCPUs, meminfo)
    online_timeout_per_block: float = 0.1  # added to ``timeout`` for each block of a guest-set-memory-blocks
    reconnect_interval: float = 1.0  # wait before talking again to an agent that failed
    max_batch: int = 256  # blocks in one guest-set-memory-blocks
    concurrency: int = 0  # 0: the number of guests (guests online in parallel, one batch each)
    verify: bool = False  # re-read the block list after each batch (a listing costs ~50 ms under TCG)

    @property
    def declared_concurrency(self) -> int:
        return self.concurrency or max(1, len(self.guests))


def _duration(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"must be between {lo} and {hi} seconds, got {value!r}")
        return seconds

    return parse


def _whole(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"expected a whole number between {lo} and {hi}, got {value!r}")
        return value

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _socket(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected the absolute path of a unix socket, got {value!r}")
    if len(value.encode()) > MAX_SOCKET_PATH:
        raise ValueError(f"a unix socket path is at most {MAX_SOCKET_PATH} bytes, got {len(value.encode())}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"expected a non-empty name without spaces, got {value!r}")
    return value


def _optional_socket(value: Any) -> str:
    return "" if value == "" else _socket(value)


def _port_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the port's id= as a string, got {value!r}")
    return value


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "poll_interval": _duration(0.01, 3600),
    "resize_poll_interval": _duration(0.01, 60),
    "resize_quiet": _duration(0.0, 600),
    "timeout": _duration(0.01, 600),
    "online_timeout_per_block": _duration(0.0, 60),
    "reconnect_interval": _duration(0.01, 600),
    "max_batch": _whole(1, 65536),
    "concurrency": _whole(0, 4096),
    "verify": _bool,
}
_GUEST_PARSERS: dict[str, Callable[[Any], Any]] = {
    "name": _name, "qga": _socket, "qmp": _optional_socket, "port_id": _port_id,
}


def _problem(key: str, message: str, hint: str = HINT) -> ConfigProblem:
    return ConfigProblem(key, message, hint)


def _guest(number: int, table: Any, problems: list[ConfigProblem]) -> GuestSettings | None:
    prefix = f"plugins.qga.guest[{number}]"
    if not isinstance(table, dict):
        problems.append(_problem(prefix, "expected a table", 'e.g. [[plugins.qga.guest]] name = "vm1" qga = "/run/vm1/qga.sock"'))
        return None
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        parser = _GUEST_PARSERS.get(key)
        if parser is None:
            problems.append(_problem(f"{prefix}.{key}", "unknown key", f"known keys: {', '.join(_GUEST_PARSERS)}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            problems.append(_problem(f"{prefix}.{key}", str(exc)))
    missing = [k for k in ("name", "qga") if k not in table]
    for key in missing:
        problems.append(_problem(f"{prefix}.{key}", "missing", "every guest needs a name and its qga socket path"))
    if missing or len(kwargs) < len(table):
        return None
    return GuestSettings(**kwargs)


def _guests(value: Any, problems: list[ConfigProblem]) -> tuple[GuestSettings, ...]:
    if not isinstance(value, list):
        problems.append(_problem("plugins.qga.guest", "expected an array of tables [[plugins.qga.guest]]"))
        return ()
    guests = [g for i, table in enumerate(value) if (g := _guest(i, table, problems)) is not None]
    for attr in ("name", "qga", "qmp"):
        seen: dict[str, str] = {}
        for g in guests:
            key = getattr(g, attr)
            if key and key in seen:
                problems.append(_problem(f"plugins.qga.guest.{attr}", f"{key!r} is used by guests {seen[key]!r} and {g.name!r}",
                                         "each guest needs its own name and sockets (an agent serves one client)"))
            seen.setdefault(key, g.name)
    return tuple(guests)


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None, *,
          require_guests: bool = True) -> Settings:
    """Settings from the plugin's table. Problems are appended, or raised as one ConfigError when not collected."""
    collect: list[ConfigProblem] = [] if problems is None else problems
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "guest":
            kwargs["guests"] = _guests(value, collect)
            continue
        parser = _PARSERS.get(key)
        if parser is None:
            collect.append(_problem(f"plugins.qga.{key}", "unknown key", f"known keys: guest, {', '.join(_PARSERS)}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            collect.append(_problem(f"plugins.qga.{key}", str(exc)))
    if require_guests and not table.get("guest"):
        collect.append(_problem("plugins.qga.guest", "no guest configured",
                                'add [[plugins.qga.guest]] tables with name = "..." and qga = "/path/to/qga.sock"'))
    if problems is None and collect:
        lines = "\n  ".join(f"{p.key}: {p.message}" for p in collect)
        raise ConfigError(f"invalid [plugins.qga] table:\n  {lines}", hint=HINT)
    return Settings(**kwargs)


__all__ = ["GuestSettings", "Settings", "parse"]
