"""The kernel's knobs as hotplugd first found them, kept in its state directory for an uninstall to restore.

``<state_directory>/kernel-knobs.json``: ``{"host": {"auto_online_blocks": "offline", ...},
"recorded_at": "<ISO time>"}``, one table per domain. A domain's values are written once,
before hotplugd's first change to them, and never overwritten: a restart finds the
knobs as hotplugd set them, which are not the ones to restore.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path

from hotplugd.errors import BackendError
from hotplugd.model import KernelKnobs

FILE_NAME = "kernel-knobs.json"


def record_path(state_directory: str | Path) -> Path:
    return Path(state_directory) / FILE_NAME


def read_record(state_directory: str | Path) -> dict[str, dict[str, str]]:
    """The recorded knobs by domain ({} when nothing was recorded)."""
    path = record_path(state_directory)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}", hint="restore the kernel's knobs by hand") from None
    return {k: dict(v) for k, v in data.items() if isinstance(v, Mapping)}


def record_found(state_directory: str | Path, domain: str, knobs: KernelKnobs, names: list[str]) -> bool:
    """Record ``names`` as ``knobs`` reads them for ``domain``, unless already recorded (False then).

    Blocking (a worker thread's job); the file is replaced atomically.
    """
    path = record_path(state_directory)
    data: dict[str, object] = dict(read_record(state_directory))
    if domain in data:
        return False
    data[domain] = {name: knobs.values[name] for name in names if name in knobs.values}
    data["recorded_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise BackendError(f"cannot record the kernel's knobs in {path}: {exc}",
                           hint="set state_directory to a writable directory (the unit's StateDirectory=)") from None
    return True
