"""The writer process: writes memory blocks' ``state`` files for the sysfs backend.

Run by :mod:`hotplugd_sysfs.writers` as ``python -I -S -c <this file> MEMORY_DIR``.
It imports the standard library only (it starts in tens of milliseconds, even
under emulation) and holds no state: everything it does is asked for on stdin.

Why a process: a ``state`` write blocks in the kernel for milliseconds, so the
daemon cannot make it from its event loop; from a worker thread, every syscall
hands the GIL back and waits to take it again while the loop reads the rest of
a hot-add's uevents (up to the 5 ms switch interval per syscall, several per
block). A process has its own interpreter lock and the kernel schedules it.

Protocol, ASCII lines:

- first, once: ``ready`` (from the writer, when it is up);
- request, one line per run: ``INDEX VALUE [INDEX VALUE ...]`` where VALUE is
  ``online``, ``online_kernel`` or ``online_movable``;
- replies, one line per block, in request order, sent when the run is done and
  at least every :data:`FLUSH_EVERY` seconds during it: ``INDEX ERRNO ZONES``.
  ERRNO is the write's (0: written); ZONES is what ``valid_zones`` read after a
  successful write (maybe empty), ``!ERRNO`` when that read failed, absent
  after a failed write.

A malformed request ends the process with status 2 and a message on stderr;
end of input ends it with status 0. SIGINT and SIGTERM are ignored: the daemon
decides when its writer stops (a terminal's Ctrl-C reaches the whole process
group, and systemd's stop the whole cgroup, while the daemon lets the run in
flight finish); a daemon that is gone closes the writer's input all the same.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time

VALUES = frozenset({b"online", b"online_kernel", b"online_movable"})
#: The first line out: the writer is up (the daemon says READY=1 only after it).
READY = b"ready\n"
#: The longest a done block's reply waits during a run. A reply per block would cost the
#: writer a syscall and the daemon a wake-up each; a writer that dies loses at most this
#: much of its replies, and the daemon writes those blocks again (now online: success).
FLUSH_EVERY = 0.02


class BadRequest(ValueError):
    pass


def parse(line: bytes) -> list[tuple[int, bytes]]:
    """One request line as (index, value) pairs; BadRequest when it is not one."""
    words = line.split()
    if not words or len(words) % 2:
        raise BadRequest(f"expected INDEX VALUE pairs, got {line[:80]!r}")
    items = []
    for index, value in zip(words[::2], words[1::2], strict=True):
        if not index.isdigit() or value not in VALUES:
            raise BadRequest(f"bad pair {index[:20]!r} {value[:20]!r}")
        items.append((int(index), value))
    return items


def online(memory_dir: int, index: int, value: bytes) -> bytes:
    """Write ``value`` to the block's ``state``, then read its ``valid_zones``: the reply line.

    ``memory_dir`` is an open descriptor of the memory directory: each open walks two
    path components instead of six.
    """
    base = f"memory{index}"
    try:
        fd = os.open(f"{base}/state", os.O_WRONLY | os.O_CLOEXEC, dir_fd=memory_dir)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
    except OSError as exc:
        return b"%d %d\n" % (index, exc.errno or 0)
    try:
        fd = os.open(f"{base}/valid_zones", os.O_RDONLY | os.O_CLOEXEC, dir_fd=memory_dir)
        try:
            zones = os.read(fd, 4096)  # a sysfs attribute comes whole in one read
        finally:
            os.close(fd)
    except OSError as exc:
        return b"%d 0 !%d\n" % (index, exc.errno or 0)
    return b"%d 0 %s\n" % (index, b" ".join(zones.split()))


def open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def serve(memory_dir: int, requests: io.BufferedIOBase, replies: io.BufferedIOBase, parent: int | None = None) -> None:
    """Answer requests until end of input, or until process ``parent`` (the daemon) is gone.

    ``memory_dir``: an open descriptor of the memory directory (:func:`open_dir`).

    A daemon killed in the middle of a run leaves its writer to the init
    process: the writer then stops after the block in flight rather than
    onlining the rest of a run that nobody will account for.
    """
    for line in requests:
        flushed = time.monotonic()
        for index, value in parse(line):
            if parent is not None and os.getppid() != parent:
                return
            replies.write(online(memory_dir, index, value))
            if time.monotonic() - flushed >= FLUSH_EVERY:
                replies.flush()
                flushed = time.monotonic()
        replies.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: writer_child.py MEMORY_DIR", file=sys.stderr)
        return 2
    try:
        memory_dir = open_dir(argv[1])
    except OSError as exc:
        print(f"hotplugd sysfs writer: cannot open {argv[1]}: {exc.strerror}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    try:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        serve(memory_dir, sys.stdin.buffer, sys.stdout.buffer, os.getppid())
    except BadRequest as exc:
        print(f"hotplugd sysfs writer: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the daemon is gone
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
