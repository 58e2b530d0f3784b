"""Running a qga backend (or any guest fleet) outside a daemon, for the backend-level tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from hotplugd import Backend, BlockEvent, Rescan


@asynccontextmanager
async def started(b: Backend) -> AsyncIterator[list[BlockEvent | Rescan]]:
    """Start the backend, scan, and collect its events in the background until the block ends."""
    seen: list[BlockEvent | Rescan] = []

    async def collect() -> None:
        async for event in b.events():
            seen.append(event)

    await b.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await b.scan()
            yield seen
            tg.cancel_scope.cancel()
    finally:
        await b.stop()
