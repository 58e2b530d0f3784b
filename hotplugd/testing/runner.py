"""Drive a Daemon from a test: start it, act on the running daemon, wait until it is idle."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from hotplugd.daemon import Daemon


@asynccontextmanager
async def running(daemon: Daemon, *, until_idle: bool = True) -> AsyncIterator[Daemon]:
    """Run ``daemon`` around the ``async with`` body.

    The body starts once the daemon is ready: it has scanned the host
    (coldplug) and reads the backend's events, so blocks hot-added in the body
    (``backend.add``) are seen exactly once, as events. Leaving the block waits
    until the event source has ended (``backend.end()``) and every queued block
    has had its phase; with ``until_idle=False`` it stops the daemon instead
    (blocks still deferred stay queued, the online calls in flight finish).
    An exception in the body cancels the daemon.
    """
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(daemon.run, until_idle=until_idle))
        yield daemon
        if not until_idle:
            daemon.scheduler.stop()
