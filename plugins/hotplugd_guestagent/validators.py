"""What the guest backends' config tables share beyond hotplugd's own parsers (``hotplugd.whole``...)."""

from __future__ import annotations

from typing import Any

from hotplugd import whole

#: Blocks one guest kernel may online at once: beyond this is a typo.
MAX_GUEST_CONCURRENCY = 256


def concurrency(value: Any) -> int:
    """Blocks one guest's kernel onlines at once (no longer the number of guests: that is ``parallel_guests``)."""
    if value == 0 and not isinstance(value, bool):
        raise ValueError("0 is no longer allowed: concurrency is per guest (blocks its kernel onlines at once, "
                         "1 on mainline); guests in parallel are parallel_guests")
    return whole(1, MAX_GUEST_CONCURRENCY)(value)
