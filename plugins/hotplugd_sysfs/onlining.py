"""Onlining one block through ``memoryN/state``, and mapping the kernel's answer to an Outcome.

The kernel's ``state_store`` takes ``device_hotplug_lock`` (a loser sleeps 5 ms
and restarts the syscall, invisibly), then ``device_online``: an online block
answers EINVAL, which is "already online" when the re-read agrees. So does a
block the seed's kernel (Anolis) holds half-online, ``state`` offline and
``online`` 1 until its final phase ends: that re-read says
:attr:`Outcome.KERNEL_DEFERRED`, neither an error nor a retry.

Two ways in: :func:`online_blocks` writes and re-reads itself (blocking: a
worker thread calls it); or the writer process (:mod:`.writers`) writes and
reads ``valid_zones``, and :func:`judge` maps its :class:`Written` answer, with
:func:`settle` (blocking) for the rare answers that need sysfs read again.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from hotplugd import (
    EHWPOISON,
    BackendError,
    Block,
    OnlineResult,
    Outcome,
    State,
    ZoneRequest,
    narrow,
)

from .formats import GONE_ERRNOS
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
    return _narrow_refused(sysfs, block, zone, _write(sysfs, block, zone))


def _narrow_refused(sysfs: Sysfs, block: Block, zone: ZoneRequest, result: OnlineResult) -> OnlineResult:
    """An explicit zone refused (EINVAL, still offline) for a block whose zones were unknown: write what it lists."""
    if result.outcome is Outcome.PERMANENT and result.errno == errno.EINVAL and not block.valid_zones:
        narrowed = narrow(zone, _zones(sysfs, block) or ())
        if narrowed is not zone:
            return _write(sysfs, block, narrowed)
    return result


def online_blocks(sysfs: Sysfs, items: list[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
    """:func:`online_block` for each item, in order (one worker-thread call for a run)."""
    return [online_block(sysfs, block, zone) for block, zone in items]


@dataclass(frozen=True, slots=True)
class Written:
    """The writer process's answer for one block: the write's errno (0: written), then what
    ``valid_zones`` read (``zones``), or the errno of that read (``zones_errno``)."""

    errno: int
    zones: tuple[str, ...] = ()
    zones_errno: int = 0


def judge(written: Written) -> OnlineResult | None:
    """The outcome when the answer alone settles it; None when sysfs must be read again (:func:`settle`)."""
    if written.errno == 0:
        if written.zones_errno:
            return _gone_after() if written.zones_errno in GONE_ERRNOS else None
        return _confirmed(written.zones) if len(written.zones) <= 1 else None
    if written.errno == errno.EINVAL or written.errno in DENIED:
        return None
    return _mapped(written.errno, os.strerror(written.errno))


def settle(sysfs: Sysfs, block: Block, zone: ZoneRequest, written: Written) -> OnlineResult:
    """The outcome of an answer :func:`judge` left open: sysfs read again, a refused zone narrowed and written."""
    if written.errno:
        result = _failed(sysfs, block, OSError(written.errno, os.strerror(written.errno)))
    else:
        result = _confirm(sysfs, block, zone)
    return _narrow_refused(sysfs, block, zone, result)


def _write(sysfs: Sysfs, block: Block, zone: ZoneRequest) -> OnlineResult:
    """One write and its confirmation."""
    try:
        sysfs.io.write(sysfs.state_path(block.index), zone.value)
    except OSError as exc:
        return _failed(sysfs, block, exc)
    return _confirm(sysfs, block, zone)


def _confirm(sysfs: Sysfs, block: Block, zone: ZoneRequest) -> OnlineResult:
    """After a successful write: the outcome from ``valid_zones`` (and ``state`` when it must).

    ``state_store`` returns success only once ``device_online`` has onlined the
    block, so after a successful write ``valid_zones`` alone is re-read: an
    online block lists exactly its zone. More than one zone listed means it is
    offline again (someone offlined it at once), which ``state`` then confirms.
    """
    zones = _zones(sysfs, block)
    if zones is None:
        return _gone_after()
    if len(zones) > 1:
        try:
            state, zones = _reread(sysfs, block)
        except ValueError as exc:  # a state no kernel spells: this block's error, said plainly, not a traceback
            return OnlineResult(Outcome.ERROR, detail=str(exc))
        if state is None:
            return _gone_after()
        if state is State.KERNEL_DEFERRED:  # the seed's kernel took the write but holds the block
            return _kernel_deferred()
        if state is not State.ONLINE:
            return OnlineResult(Outcome.ERROR, detail=f"wrote {zone.value!r} but state reads {state.value!r}")
    return _confirmed(zones)


def _confirmed(zones: tuple[str, ...]) -> OnlineResult:
    return OnlineResult(Outcome.ONLINED, zone=zones[0] if zones else None)


def _gone_after() -> OnlineResult:
    return OnlineResult(Outcome.GONE, detail="removed right after onlining")


def _kernel_deferred(code: int | None = None) -> OnlineResult:
    return OnlineResult(Outcome.KERNEL_DEFERRED, errno=code,
                        detail="state reads offline, online reads 1: the kernel's deferred phase finishes it")


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
    if code in DENIED:
        raise denied(sysfs.state_path(block.index)) from None
    if code == errno.EINVAL:
        state, zones = _reread(sysfs, block)
        if state is None:
            return OnlineResult(Outcome.GONE, errno=code, detail="removed while onlining")
        if state is State.ONLINE:  # another onliner (or the kernel) got there first
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=zones[0] if zones else None, errno=code)
        if state is State.KERNEL_DEFERRED:  # the seed's kernel onlined it, all but its final phase
            return _kernel_deferred(code)
        return OnlineResult(Outcome.PERMANENT, errno=code, detail=f"EINVAL and the block is still {state.value}")
    return _mapped(code, exc.strerror or str(exc))


def _mapped(code: int, message: str) -> OnlineResult:
    """A failed write whose errno alone gives the outcome (not EINVAL, not a denial)."""
    name = errno.errorcode.get(code, str(code))
    return OnlineResult(ERRNO_OUTCOMES.get(code, Outcome.ERROR), errno=code, detail=f"{name}: {message}")


def _reread(sysfs: Sysfs, block: Block) -> tuple[State | None, tuple[str, ...]]:
    """The block's state (``online`` read too when offline) and valid_zones now; (None, ()) when it is gone."""
    try:
        state = sysfs.block_state(block.index)
        zones = parse_zones(sysfs.attr(sysfs.block_dir(block.index) / "valid_zones"))
    except OSError as exc:
        if is_gone(exc):
            return None, ()
        raise
    return state, zones
