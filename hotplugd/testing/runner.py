"""Drive a Daemon from a test: start it, act on the running daemon, wait until it is idle."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..daemon import Daemon


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    """Run ``daemon`` until idle around the ``async with`` body.

    The body starts once the daemon is ready: it has scanned the host
    (coldplug) and reads the backend's events, so blocks hot-added in the body
    (``backend.add``) are seen exactly once, as events. Leaving the block waits
    until the event source has ended (``backend.end()``) and every queued block
    has had its phase; an exception in the body cancels the daemon.
    """
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(daemon.run, until_idle=True))
        yield daemon
