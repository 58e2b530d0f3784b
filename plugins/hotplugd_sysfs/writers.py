"""Writer processes: the sysfs backend's ``state`` writes, made away from the daemon's interpreter lock.

:mod:`.writer_child` says why and speaks the protocol. Each online call in
flight has a writer of its own (the backend's ``concurrency`` caps the calls);
an idle writer waits for the next call. A writer that dies, or whose call is
cancelled halfway (its answers would be out of step), is dropped: the blocks it
did not answer for are written from a worker thread instead, and the next call
starts a new writer.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import anyio
import structlog
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from hotplugd import BackendError, Block, OnlineResult, ZoneRequest

from .onlining import Written, judge, online_block, settle
from .sysfs import Sysfs
from .writer_child import READY

log = structlog.get_logger("hotplugd.sysfs")

#: A reply line is short ("INDEX ERRNO Normal Movable"); a longer one is a broken child.
MAX_LINE = 4096
#: How long a writer may take to start.
START_TIMEOUT = 60.0


def parse_reply(line: bytes, index: int) -> Written:
    """One reply line for block ``index``; ValueError when it is not one."""
    parts = line.decode("ascii").split(maxsplit=2)
    if len(parts) < 2 or int(parts[0]) != index:
        raise ValueError(f"expected the reply for memory{index}, got {line[:80]!r}")
    code, rest = int(parts[1]), parts[2] if len(parts) > 2 else ""
    if code or not rest.startswith("!"):
        return Written(code, tuple(rest.split()) if not code else ())
    return Written(0, zones_errno=int(rest[1:]))


class Writer:
    """One writer process; one run at a time."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.alive = True

    def __repr__(self) -> str:
        return f"<Writer pid={self.process.pid} {'alive' if self.alive else 'dead'}>"

    @classmethod
    async def spawn(cls, memory_dir: Path, python: str) -> Writer:
        """Start a writer and wait until it says it is up (its interpreter takes ~0.5 s of CPU under TCG)."""
        source = resources.files(__package__).joinpath("writer_child.py").read_text()
        hint = "set plugins.sysfs.writer = \"thread\" to write from a worker thread"
        try:
            process = await anyio.open_process([python, "-I", "-S", "-c", source, str(memory_dir)],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        except OSError as exc:
            raise BackendError(f"cannot start the sysfs writer process ({python}): {exc}", hint=hint) from None
        writer = cls(process)
        try:
            with anyio.fail_after(START_TIMEOUT):
                line = await writer._stdout.receive_until(b"\n", MAX_LINE)
        except (TimeoutError, anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
            line = b""
        if line + b"\n" != READY:
            await writer.aclose()
            raise BackendError(f"the sysfs writer process ({python}) did not start (exit status "
                               f"{process.returncode})", hint=hint)
        return writer

    async def write(self, items: Sequence[tuple[int, str]]) -> list[Written]:
        """Write a run; the answers in order, fewer than asked when the writer died (then ``alive`` is False)."""
        answers: list[Written] = []
        try:
            await self._stdin.send(" ".join(f"{index} {value}" for index, value in items).encode() + b"\n")
            for index, _ in items:
                line = await self._stdout.receive_until(b"\n", MAX_LINE)
                answers.append(parse_reply(line, index))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError, anyio.DelimiterNotFound, ValueError,
                ConnectionError) as exc:  # anyio 4.8 (Debian 13) lets a dead pipe's ConnectionResetError through
            self.alive = False
            log.warning("sysfs_writer_lost", pid=self.process.pid, returncode=self.process.returncode,
                        answered=len(answers), asked=len(items), error=str(exc) or type(exc).__name__)
        except BaseException:  # cancelled mid-run: its answers would be out of step
            self.alive = False
            raise
        return answers

    async def aclose(self) -> None:
        """End of input ends the writer; one that does not end within a second is killed."""
        self.alive = False
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stdin.aclose()
            with anyio.move_on_after(1.0):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
            await self.process.aclose()


class Writers:
    """The backend's writer processes, started on demand and kept while idle."""

    def __init__(self, sysfs: Sysfs, python: str | None = None) -> None:
        self.sysfs = sysfs
        self.python = python or sys.executable
        self._idle: list[Writer] = []
        self.started = 0  # writers started so far (a restarted writer counts again)

    def __repr__(self) -> str:
        return f"<Writers {self.sysfs.memory_dir} idle={len(self._idle)} started={self.started}>"

    async def start(self) -> None:
        """Start the first writer before any hot-add needs it."""
        self._idle.append(await self._spawn())

    async def _spawn(self) -> Writer:
        writer = await Writer.spawn(self.sysfs.memory_dir, self.python)
        self.started += 1
        return writer

    async def online_many(self, items: Sequence[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
        """Online a run through a writer; what it leaves unanswered or unsettled, from a worker thread."""
        writer = self._idle.pop() if self._idle else await self._spawn()
        try:
            answers = await writer.write([(block.index, zone.value) for block, zone in items])
        finally:
            if writer.alive:
                self._idle.append(writer)
            else:
                await writer.aclose()
        results: list[OnlineResult | None] = [judge(answer) for answer in answers]
        results += [None] * (len(items) - len(answers))
        if all(results):
            return results  # type: ignore[return-value]
        return await anyio.to_thread.run_sync(self._complete, list(items), answers, results)

    def _complete(self, items: list[tuple[Block, ZoneRequest]], answers: list[Written],
                  results: list[OnlineResult | None]) -> list[OnlineResult]:
        """Blocking: settle the answers judge() left open, online the unanswered blocks from this thread."""
        done: list[OnlineResult] = []
        for i, ((block, zone), result) in enumerate(zip(items, results, strict=True)):
            if result is None:
                result = settle(self.sysfs, block, zone, answers[i]) if i < len(answers) else \
                    online_block(self.sysfs, block, zone)
            done.append(result)
        return done

    async def aclose(self) -> None:
        while self._idle:
            await self._idle.pop().aclose()
