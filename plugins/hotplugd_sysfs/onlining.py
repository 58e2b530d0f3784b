"""Onlining one block through ``memoryN/state``, and mapping the kernel's answer to an Outcome.

Blocking: the backend calls :func:`online_blocks` from a worker thread. The
kernel's ``state_store`` takes ``device_hotplug_lock`` (a loser sleeps 5 ms
and restarts the syscall, invisibly), then ``device_online``: an online block
answers EINVAL, which is "already online" when the re-read agrees.
"""

from __future__ import annotations

import errno

from hotplugd import BackendError, Block, OnlineResult, Outcome, State, ZoneRequest
from hotplugd.model import EHWPOISON
from hotplugd.zones import narrow

from .sysfs import Sysfs, is_gone, parse_zones

#: errno → outcome, for every error but EINVAL (which depends on the state re-read).
ERRNO_OUTCOMES = {
    errno.EBUSY: Outcome.TRANSIENT,
    errno.ENOMEM: Outcome.TRANSIENT,
    errno.EAGAIN: Outcome.TRANSIENT,
    errno.ENOENT: Outcome.GONE,
    errno.ENODEV: Outcome.GONE,
    EHWPOISON: Outcome.PERMANENT,
}
DENIED = (errno.EACCES, errno.EPERM)


def denied(path: object) -> BackendError:
    return BackendError(f"must run as root or with write access to {path}",
                        hint="run hotplugd as root (the systemd unit does), or grant write access to the state files")


def online_block(sysfs: Sysfs, block: Block, zone: ZoneRequest) -> OnlineResult:
    """Write ``zone`` to the block's ``state``, then re-read ``valid_zones`` for the zone it joined.

    A block queued from a fresh ``add`` has ``valid_zones = ()`` (not read): an
    explicit zone the kernel refuses is then narrowed to what it lists, and written again.
    """
    result = _write(sysfs, block, zone)
    if result.outcome is Outcome.PERMANENT and result.errno == errno.EINVAL and not block.valid_zones:
        narrowed = narrow(zone, _zones(sysfs, block) or ())
        if narrowed is not zone:
            return _write(sysfs, block, narrowed)
    return result


def online_blocks(sysfs: Sysfs, items: list[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
    """:func:`online_block` for each item, in order (one worker-thread call for a run)."""
    return [online_block(sysfs, block, zone) for block, zone in items]


def _write(sysfs: Sysfs, block: Block, zone: ZoneRequest) -> OnlineResult:
    """One write and its confirmation.

    ``state_store`` returns success only once ``device_online`` has onlined the
    block, so after a successful write ``valid_zones`` alone is re-read: an
    online block lists exactly its zone. More than one zone listed means it is
    offline again (someone offlined it at once), which ``state`` then confirms.
    """
    try:
        sysfs.io.write(sysfs.state_path(block.index), zone.value)
    except OSError as exc:
        return _failed(sysfs, block, exc)
    zones = _zones(sysfs, block)
    if zones is None:
        return OnlineResult(Outcome.GONE, detail="removed right after onlining")
    if len(zones) > 1:
        state, zones = _reread(sysfs, block)
        if state is None:
            return OnlineResult(Outcome.GONE, detail="removed right after onlining")
        if state is not State.ONLINE:
            return OnlineResult(Outcome.ERROR, detail=f"wrote {zone.value!r} but state reads {state.value!r}")
    return OnlineResult(Outcome.ONLINED, zone=zones[0] if zones else None)


def _zones(sysfs: Sysfs, block: Block) -> tuple[str, ...] | None:
    """The block's ``valid_zones`` now; None when it is gone. Only for a block linked to its node."""
    try:
        return parse_zones(sysfs.attr(sysfs.block_dir(block.index) / "valid_zones"))
    except OSError as exc:
        if is_gone(exc):
            return None
        raise


def _failed(sysfs: Sysfs, block: Block, exc: OSError) -> OnlineResult:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if code in DENIED:
        raise denied(sysfs.state_path(block.index)) from None
    if code == errno.EINVAL:
        state, zones = _reread(sysfs, block)
        if state is None:
            return OnlineResult(Outcome.GONE, errno=code, detail="removed while onlining")
        if state is State.ONLINE:  # another onliner (or the kernel) got there first
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=zones[0] if zones else None, errno=code)
        return OnlineResult(Outcome.PERMANENT, errno=code, detail=f"EINVAL and the block is still {state.value}")
    outcome = ERRNO_OUTCOMES.get(code, Outcome.ERROR)
    return OnlineResult(outcome, errno=code, detail=f"{name}: {exc.strerror or exc}")


def _reread(sysfs: Sysfs, block: Block) -> tuple[State | None, tuple[str, ...]]:
    """The block's state and valid_zones now; (None, ()) when it is gone."""
    base = sysfs.block_dir(block.index)
    try:
        state = State(sysfs.attr(base / "state"))
        zones = parse_zones(sysfs.attr(base / "valid_zones"))
    except OSError as exc:
        if is_gone(exc):
            return None, ()
        raise
    return state, zones
