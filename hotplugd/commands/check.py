"""``hotplugd check``: the configured backend's view of other onliners on this host.

Reports what would compete with hotplugd (the kernel's own auto-online, a
``memhp_default_state=`` boot option, ``memory_hotplug`` parameters, udev
rules that online memory), one line each. Exit 0 when there is none, 1 otherwise.
Reads only: it never starts the backend (no socket, no write).
"""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from hotplugd.plugin.backend import Backend

EXIT_CLEAN = 0
EXIT_CONFLICTS = 1


def check(backend: Backend, name: str, out: TextIO | None = None) -> int:
    """Print every conflict ``backend`` finds; the exit code says whether there was any."""
    stream = out or sys.stdout
    conflicts = anyio.run(backend.conflicts)
    if not conflicts:
        print(f"no conflicts: nothing else onlines memory on this host (backend {name})", file=stream)
        return EXIT_CLEAN
    print(f"{len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''} (backend {name}):", file=stream)
    for message in conflicts:
        print(f"- {message}", file=stream)
    return EXIT_CONFLICTS
