"""The qga backend's settings: the ``[plugins.qga]`` table, validated (every problem names its key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigProblem, boolean, duration, read_table, setting, tables_of, whole
from hotplugd_guestagent.validators import fleet_problems

from .validators import HINT, concurrency, glob_pattern, name, optional_socket, port_id, relative_path, socket

_GUEST = '[[plugins.qga.guest]] name = "vm1" qga = "/run/vm1/qga.sock"'
_DIR = '[[plugins.qga.guest_dirs]] glob = "/run/vms/*" qga = "qga.sock"'


@dataclass(frozen=True)
class GuestSettings:
    """One guest: its name (its domain), its agent's socket and (optionally) the daemon's own QMP monitor."""

    name: str = setting(parse=name, help="the guest's name (its domain, a metrics label)")
    qga: str = setting(parse=socket, help="QEMU's chardev socket of the guest's org.qemu.guest_agent.0 port")
    qmp: str = setting("", optional_socket, "a QMP monitor for the daemon alone (events); empty: poll only")
    port_id: str = setting("", port_id, "the agent port's id=: its VSERPORT_CHANGE events say the agent is up or down")
    concurrency: int | None = setting(None, concurrency, "blocks its kernel onlines at once; default: the table's")


@dataclass(frozen=True)
class GuestDirSettings:
    """A directory per guest, as a hypervisor manager lays them out: ``glob`` matches the directories.

    A guest is present while its directory matches and its ``qga`` socket exists;
    its name is the directory's name.
    """

    glob: str = setting(parse=glob_pattern, help="absolute pattern of the guests' directories, e.g. /run/vms/*")
    qga: str = setting("qga.sock", relative_path, "the agent's socket, relative to each directory")
    qmp: str = setting("", relative_path, "the daemon's QMP monitor, relative to each directory (empty: poll only)")
    port_id: str = setting("", port_id, "the agent port's id=")
    concurrency: int | None = setting(None, concurrency, "blocks its kernel onlines at once; default: the table's")


def _dir_problems(d: GuestDirSettings, key: str) -> list[ConfigProblem]:
    out = []
    if not d.qga:
        out.append(ConfigProblem(f"{key}.qga", "empty", "the agent's socket in each directory"))
    if d.qmp and d.qmp == d.qga:
        out.append(ConfigProblem(f"{key}.qmp", f"{d.qmp!r} is also the agent's socket",
                                 "the agent and the QMP monitor are two sockets"))
    return out


@dataclass(frozen=True)
class Settings:
    guests: tuple[GuestSettings, ...] = setting((), tables_of(GuestSettings, _GUEST), "[[plugins.qga.guest]] tables",
                                                key="guest")
    guest_dirs: tuple[GuestDirSettings, ...] = setting((), tables_of(GuestDirSettings, _DIR, one=True,
                                                                     check=_dir_problems),
                                                       "guest directories: { glob = ..., qga = ... }")
    discover_interval: float = setting(5.0, duration(0.1, 3600), "re-read guest_dirs this often")
    poll_interval: float = setting(5.0, duration(0.01, 3600), "fallback poll of every guest's block list")
    resize_poll_interval: float = setting(0.1, duration(0.01, 60),
                                          "poll while memory is being added (0.76 s against 4 s)")
    resize_quiet: float = setting(1.5, duration(0.0, 600),
                                  "adding is over when no block appeared and no event came for this long")
    timeout: float = setting(5.0, duration(0.01, 600), "one agent request (sync, list, vCPUs, meminfo)")
    online_timeout_per_block: float = setting(0.1, duration(0.0, 60),
                                              "added to timeout for each block of a guest-set-memory-blocks")
    reconnect_interval: float = setting(1.0, duration(0.01, 600),
                                        "first wait before talking again to an agent (or monitor) that failed")
    reconnect_max: float = setting(30.0, duration(0.01, 3600),
                                   "the wait doubles after each further failure, up to this")
    max_batch: int = setting(256, whole(1, 65536), "blocks in one guest-set-memory-blocks")
    concurrency: int = setting(1, concurrency, "per guest: blocks its kernel onlines at once (mainline: 1)")
    parallel_guests: int = setting(0, whole(0, 65536), "guests running a final phase at once (0: all)")
    verify: bool = setting(False, boolean, "re-read the block list after each batch (a listing costs ~50 ms under TCG)")

    def concurrency_of(self, guest: GuestSettings | None) -> int:
        """The real concurrency inside ``guest`` (the table's default for an unknown one)."""
        return (guest.concurrency if guest is not None else None) or self.concurrency


def _duplicates(guests: tuple[GuestSettings, ...]) -> list[ConfigProblem]:
    out = []
    for attr in ("name", "qga", "qmp"):
        seen: dict[str, str] = {}
        for g in guests:
            key = getattr(g, attr)
            if key and key in seen:
                out.append(ConfigProblem(f"plugins.qga.guest.{attr}", f"{key!r} is used by guests {seen[key]!r} and "
                                         f"{g.name!r}",
                                         "each guest needs its own name and sockets (an agent serves one client)"))
            seen.setdefault(key, g.name)
    return out


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None, *,
          require_guests: bool = True) -> Settings:
    """Settings from the plugin's table. Problems are appended, or raised as one ConfigError when not collected."""
    def check(settings: Settings) -> list[ConfigProblem]:
        named = not isinstance(table, Mapping) or table.get("guest") or table.get("guest_dirs")
        unnamed = None if named or not require_guests else ConfigProblem(
            "plugins.qga.guest", "no guest configured",
            'add [[plugins.qga.guest]] tables with name = "..." and qga = "/path/to/qga.sock", '
            'or guest_dirs = { glob = "/run/vms/*", qga = "qga.sock" }')
        return _duplicates(settings.guests) + fleet_problems(settings, "plugins.qga", unnamed)

    return read_table(Settings, table, "plugins.qga", problems, hint=HINT, check=check)


__all__ = ["GuestDirSettings", "GuestSettings", "Settings", "parse"]
