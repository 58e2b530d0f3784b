"""Fault injection for the daemon's own tests (not plugin hooks).

Off unless ``HOTPLUGD_TEST_HOOKS=1``: never set it in production.

With the hooks on, SIGUSR2 stalls the daemon's event loop on purpose: the
signal task calls ``time.sleep`` in the loop itself, so nothing else runs,
``WATCHDOG=1`` stops, and systemd's ``WatchdogSec=`` kills and restarts the
daemon. ``HOTPLUGD_TEST_STALL_SECONDS`` sets how long (default 300 s, longer
than any sane watchdog timeout). The real-kernel tests under systemd use it
(``tests/vm/test_systemd.py``). With the hooks off, SIGUSR2 is logged and ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ENV_ENABLE = "HOTPLUGD_TEST_HOOKS"
ENV_STALL_SECONDS = "HOTPLUGD_TEST_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 300.0


@dataclass(frozen=True)
class FaultInjection:
    """Which faults may be injected; built from the environment by :meth:`from_environ`."""

    __test__ = False  # not a pytest test class

    enabled: bool = False
    stall_seconds: float = DEFAULT_STALL_SECONDS
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> FaultInjection:
        """``HOTPLUGD_TEST_HOOKS=1`` turns them on; a bad stall length falls back to the default."""
        env = os.environ if environ is None else environ
        try:
            seconds = float(env.get(ENV_STALL_SECONDS, DEFAULT_STALL_SECONDS))
        except ValueError:
            seconds = DEFAULT_STALL_SECONDS
        return cls(enabled=env.get(ENV_ENABLE) == "1", stall_seconds=max(0.0, seconds))

    def stall_loop(self) -> bool:
        """Block the calling thread (the event loop) for :attr:`stall_seconds`; False when the hooks are off."""
        if not self.enabled:
            return False
        self.sleep(self.stall_seconds)
        return True
