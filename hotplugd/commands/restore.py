"""``hotplugd restore-knobs``: the kernel's onlining knobs back as hotplugd first found them.

hotplugd records the host's knobs in ``<state_directory>/kernel-knobs.json`` before its first
change to them (:mod:`hotplugd.engine.knobrecord`). On uninstall (the Debian package's prerm on
remove, ``systemd/install.py --uninstall``) this command writes them back through the backend,
``auto_online_blocks`` first when it turns the kernel's onlining off and last when it turns it on
(after the policy it goes with), then removes the record and the state directory if nothing else
is in it. A knob this kernel lacks is skipped; one that cannot be written is named and the record
kept, exit 1. The knobs recorded for another domain (a guest's kernel) are left alone. Stop the
daemon first: a running one keeps the knobs as its plan wants them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import anyio

from hotplugd.config import Config
from hotplugd.engine.knobrecord import record_path
from hotplugd.errors import EXIT_FAILURE, BackendError
from hotplugd.model import HOST_DOMAIN, KNOB_NAMES
from hotplugd.plugin.backend import Backend

EXIT_RESTORED = 0


def restore_order(values: dict[str, str]) -> list[str]:
    """``auto_online_blocks`` first when it turns the kernel's onlining off, last when on (after its policy)."""
    names = [name for name in values if name != "auto_online_blocks"]
    if "auto_online_blocks" in values:
        names.insert(0 if values["auto_online_blocks"] == "offline" else len(names), "auto_online_blocks")
    return names


def read_host_record(path: Path) -> dict[str, object] | None:
    """The record's tables (None when there is none); BackendError naming the file when it is unusable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}", hint="restore the kernel's onlining knobs by hand") from None
    if not isinstance(data, dict) or not isinstance(data.get(HOST_DOMAIN), dict):
        raise BackendError(f"{path} has no {HOST_DOMAIN!r} table", hint="restore the kernel's onlining knobs by hand")
    return data


def restore_knobs(config: Config, backend: Backend, out: TextIO | None = None) -> int:
    """Write back the host's recorded knobs, then remove the record; exit 1 when any could not be."""
    stream = out or sys.stdout
    path = record_path(config.state_directory)

    def say(message: str) -> None:
        print(message, file=stream)

    data = read_host_record(path)
    if data is None:
        say(f"no {path}: hotplugd never changed the kernel's onlining knobs here; nothing to restore")
        remove_if_empty(path.parent, say)
        return EXIT_RESTORED
    host = data[HOST_DOMAIN]
    assert isinstance(host, dict)
    for domain in sorted(k for k, v in data.items() if k != HOST_DOMAIN and isinstance(v, dict)):
        say(f"left alone: the knobs recorded for {domain!r} (that kernel is not this host's)")

    async def restore() -> bool:
        try:
            present = await backend.kernel_knobs(HOST_DOMAIN)
        except BackendError as exc:  # one unreadable knob: try each all the same, each write says why it fails
            say(f"{exc.args[0]}: writing every recorded knob")
            present = None
        have = present.values if present is not None else host
        ok = True
        for name in restore_order(host):
            value = host[name]
            if name not in KNOB_NAMES or not isinstance(value, str):
                say(f"skipped {name!r} = {value!r} in {path}: not a kernel onlining knob and value")
                ok = False
            elif name not in have:
                say(f"skipped {name}: this kernel does not have it")
            else:
                try:
                    await backend.set_kernel_knobs({name: value}, HOST_DOMAIN)
                except BackendError as exc:
                    say(str(exc.args[0]))
                    ok = False
                else:
                    say(f"restored {name} = {value!r}")
        return ok

    if not anyio.run(restore):
        say(f"kept {path}: restore the knobs named above by hand")
        return EXIT_FAILURE
    path.unlink()
    say(f"removed {path}")
    remove_if_empty(path.parent, say)
    return EXIT_RESTORED


def remove_if_empty(state_directory: Path, say: Callable[[str], None]) -> None:
    """The state directory goes too when the record was all it held (nothing of hotplugd's is left behind)."""
    try:
        state_directory.rmdir()
    except OSError:
        return
    say(f"removed {state_directory}")
