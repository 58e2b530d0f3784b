"""The agent's answer for one block → the core's :class:`~hotplugd.OnlineResult`.

``guest-set-memory-blocks`` writes ``online`` to the block's ``state`` in the
guest and reports, per block: ``success`` (also for a block already online),
``not-found`` (``error-code`` 2: the block is gone), ``operation-failed`` with
the write's errno (22, EINVAL, e.g. for a block the kernel refuses), or
``operation-not-supported``. ``after`` is the guest's block list re-read after
the batch (None when ``verify = false``); ``was_online`` is the state the
backend last saw before the call.
"""

from __future__ import annotations

import errno

from hotplugd import OnlineResult, Outcome

from .commands import FAILED, NOT_FOUND, NOT_SUPPORTED, SUCCESS, SetResult

TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.ENOMEM, errno.EAGAIN})


def _name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def map_result(result: SetResult | None, after: dict[int, bool] | None, was_online: bool) -> OnlineResult:
    """One block's outcome, read back from ``after`` when there is one."""
    if result is None:
        return OnlineResult(Outcome.ERROR, detail="the agent returned no result for this block")
    phys = result.phys_index
    now_online = None if after is None else after.get(phys)
    gone = after is not None and phys not in after
    if result.response == SUCCESS:
        if gone:
            return OnlineResult(Outcome.GONE, detail="removed right after onlining")
        if now_online is False:
            return OnlineResult(Outcome.ERROR, detail="the agent reported success but the block reads offline")
        return OnlineResult(Outcome.ALREADY_ONLINE if was_online else Outcome.ONLINED)
    if result.response == NOT_FOUND:
        return OnlineResult(Outcome.GONE, errno=result.error_code or errno.ENOENT, detail="not-found")
    if result.response == FAILED:
        code = result.error_code or 0
        if gone:
            return OnlineResult(Outcome.GONE, errno=code, detail="removed while onlining")
        if now_online:  # another onliner (or the guest's kernel) got there first
            return OnlineResult(Outcome.ALREADY_ONLINE, errno=code)
        outcome = Outcome.TRANSIENT if code in TRANSIENT_ERRNOS else Outcome.PERMANENT
        return OnlineResult(outcome, errno=code or None, detail=f"operation-failed: {_name(code)}")
    if result.response == NOT_SUPPORTED:
        return OnlineResult(Outcome.PERMANENT, errno=errno.EOPNOTSUPP, detail="operation-not-supported")
    return OnlineResult(Outcome.ERROR, detail=f"unknown response {result.response!r}")
