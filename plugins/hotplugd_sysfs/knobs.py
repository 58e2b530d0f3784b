"""The kernel's onlining knobs on this host: read them, write them (blocking: a worker thread calls these).

``auto_online_blocks`` says whether (and into which zone) the kernel onlines the
blocks it adds; the ``memory_hotplug`` parameters say how it picks the zone of a
plain ``online`` (``online_policy``, ``auto_movable_ratio``,
``auto_movable_numa_aware``) and, on the seed's kernel, how many workers its
deferred phase uses (``parallel_hotplug_ratio``). The core's plan decides the
values; this module only moves them between sysfs and :class:`hotplugd.KernelKnobs`.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

from hotplugd import KNOB_NAMES, BackendError, KernelKnobs

from .knobpaths import KNOB_FILES, knob_path
from .sysfs import Sysfs


def read_knobs(sysfs: Sysfs) -> KernelKnobs:
    """Every knob this kernel has, and those this process cannot write.

    A missing file is a knob this kernel lacks (an old kernel, mainline's lack of
    ``parallel_hotplug_ratio``). Writability is ``access(W_OK)``, which also
    answers no on a read-only mount (``EROFS``: a container's /sys, a unit
    without the exception to ``ProtectKernelTunables=``).
    """
    values: dict[str, str] = {}
    read_only: set[str] = set()
    for name in KNOB_NAMES:
        path = knob_path(sysfs.root, name)
        try:
            values[name] = sysfs.attr(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {_reason(exc)}") from None
        if not sysfs.io.writable(path):
            read_only.add(name)
    return KernelKnobs(values, frozenset(read_only))


def write_knobs(sysfs: Sysfs, values: Mapping[str, str]) -> None:
    """Write each knob in order; the first failure raises BackendError naming its file and errno."""
    for name, value in values.items():
        if name not in KNOB_FILES:
            raise BackendError(f"{name!r} is not a kernel onlining knob", hint=f"knobs: {', '.join(KNOB_FILES)}")
        path = knob_path(sysfs.root, name)
        try:
            sysfs.io.write(path, value)
        except OSError as exc:
            raise BackendError(f"cannot write {value!r} to {path}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({exc.strerror or exc})"
