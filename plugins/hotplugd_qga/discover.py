"""Guests found in directories, as a hypervisor manager lays them out (``[[plugins.qga.guest_dirs]]``).

Each directory matching a ``glob`` is one guest, named after the directory.
It is present while its agent socket exists (QEMU creates it at start and
removes it at exit), so a stopped guest whose directory lingers is not one.
:func:`find_guests` does blocking file-system reads: the backend runs it in a
worker thread.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from .settings import GuestDirSettings, GuestSettings
from .validators import name_problem, socket_path_problem


@dataclass
class Found:
    """What one look at the directories found: guests by name, and directories skipped (path → why)."""

    guests: dict[str, GuestSettings] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    directories: dict[str, str] = field(default_factory=dict)  # guest name → its directory


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _guest(directory: str, layout: GuestDirSettings) -> GuestSettings | str:
    """The guest of ``directory``, or why it is not one (a message for the log)."""
    name = os.path.basename(directory)
    if problem := name_problem(name):
        return f"the directory's name cannot name a guest: {problem}"
    qga = os.path.join(directory, layout.qga)
    qmp = os.path.join(directory, layout.qmp) if layout.qmp else ""
    for path in filter(None, (qga, qmp)):
        if problem := socket_path_problem(path):
            return problem
    return GuestSettings(name, qga, qmp, layout.port_id, layout.concurrency)


def find_guests(layouts: Iterable[GuestDirSettings], taken: Collection[str] = ()) -> Found:
    """Every running guest in the directories of ``layouts``; names in ``taken`` (explicit guests) are skipped.

    A name found twice (two patterns) is the first pattern's guest.
    """
    found = Found()
    for layout in layouts:
        for directory in sorted(glob.glob(layout.glob)):
            if not os.path.isdir(directory) or not _is_socket(os.path.join(directory, layout.qga)):
                continue  # not a guest's directory, or its QEMU is not running
            guest = _guest(directory, layout)
            if isinstance(guest, str):
                found.skipped[directory] = guest
            elif guest.name in taken:
                found.skipped[directory] = f"guest {guest.name!r} is configured in [[plugins.qga.guest]]"
            elif guest.name in found.guests:
                found.skipped[directory] = f"guest {guest.name!r} was found first in {found.directories[guest.name]}"
            else:
                found.guests[guest.name] = guest
                found.directories[guest.name] = directory
    return found
