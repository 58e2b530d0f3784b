"""The agent's per-block answers mapped to the core's outcomes, read back when possible."""

from __future__ import annotations

import errno

import pytest

from hotplugd import OnlineResult, Outcome
from hotplugd_guestagent.commands import SetResult
from hotplugd_guestagent.results import map_result

OFFLINE_AFTER = {32: False}
ONLINE_AFTER = {32: True}


@pytest.mark.parametrize("result, after, was_online, outcome, code", [
    (SetResult(32, "success"), ONLINE_AFTER, False, Outcome.ONLINED, None),
    (SetResult(32, "success"), ONLINE_AFTER, True, Outcome.ALREADY_ONLINE, None),
    (SetResult(32, "success"), None, False, Outcome.ONLINED, None),  # verify = false: the agent's word
    (SetResult(32, "success"), None, True, Outcome.ALREADY_ONLINE, None),  # ... and the last listing's
    (SetResult(32, "success"), {}, False, Outcome.GONE, None),
    (SetResult(32, "success"), OFFLINE_AFTER, False, Outcome.ERROR, None),
    (SetResult(32, "not-found", 2), {}, False, Outcome.GONE, errno.ENOENT),
    (SetResult(32, "not-found"), None, False, Outcome.GONE, errno.ENOENT),
    (SetResult(32, "operation-failed", 22), OFFLINE_AFTER, False, Outcome.PERMANENT, errno.EINVAL),
    (SetResult(32, "operation-failed", 22), None, False, Outcome.PERMANENT, errno.EINVAL),
    (SetResult(32, "operation-failed", 22), ONLINE_AFTER, False, Outcome.ALREADY_ONLINE, errno.EINVAL),
    (SetResult(32, "operation-failed", 22), {}, False, Outcome.GONE, errno.EINVAL),
    (SetResult(32, "operation-failed", errno.EBUSY), OFFLINE_AFTER, False, Outcome.TRANSIENT, errno.EBUSY),
    (SetResult(32, "operation-failed", errno.ENOMEM), OFFLINE_AFTER, False, Outcome.TRANSIENT, errno.ENOMEM),
    (SetResult(32, "operation-not-supported"), OFFLINE_AFTER, False, Outcome.PERMANENT, errno.EOPNOTSUPP),
    (SetResult(32, "exploded"), OFFLINE_AFTER, False, Outcome.ERROR, None),
    (None, ONLINE_AFTER, False, Outcome.ERROR, None),
])
def test_mapping(result: SetResult | None, after: dict[int, bool] | None, was_online: bool,
                 outcome: Outcome, code: int | None) -> None:
    mapped = map_result(result, after, was_online)
    assert isinstance(mapped, OnlineResult)
    assert (mapped.outcome, mapped.errno) == (outcome, code)
    assert mapped.zone is None  # the agent cannot tell zones


def test_failures_say_what_the_agent_said() -> None:
    assert "EINVAL" in map_result(SetResult(32, "operation-failed", 22), OFFLINE_AFTER, False).detail
    assert "exploded" in map_result(SetResult(32, "exploded"), None, False).detail
