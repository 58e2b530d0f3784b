"""hotplugd as a child process: start it, wait until it is ready, kill it, and read what it used.

Readiness is the ``--ready-file`` the daemon writes once it has scanned the host
and reads its events; the peak RSS is the child's own ``VmHWM``, read while it
runs (``ru_maxrss`` from ``wait4(2)`` would carry the forking pytest's size over
``exec``; ``getrusage(RUSAGE_CHILDREN)`` would count every earlier child).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: The console script of the venv running the tests.
HOTPLUGD = Path(sys.executable).with_name("hotplugd")
#: Generous: Python starts in about half a second, a loaded CI machine may take several.
START_TIMEOUT = 60.0


@dataclass
class Finished:
    """How a child ended: its exit status, its peak resident memory and what it wrote on stderr."""

    returncode: int
    max_rss: int  # bytes
    stderr: str


class Daemon:
    """One ``hotplugd`` child process, its stderr kept in a file under ``workdir``."""

    def __init__(self, args: list[str], workdir: Path, name: str = "hotplugd") -> None:
        self.args = args
        self.ready_file = workdir / f"{name}.ready"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, command: str = "run") -> Daemon:
        self.ready_file.unlink(missing_ok=True)
        argv = [str(HOTPLUGD), command, *self.args]
        if command == "run":
            argv += ["--ready-file", str(self.ready_file)]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the ready file appears; fails with the daemon's stderr if it exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"hotplugd exited with {self.proc.returncode} before ready:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hotplugd not ready after {timeout} s:\n{self.stderr()}")
            time.sleep(0.01)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = START_TIMEOUT) -> Finished:
        """Reap the child (SIGKILL after ``timeout``) and return its status and peak RSS."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        peak = 0
        while True:
            peak = max(peak, _high_water(self.proc.pid))
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        return Finished(self.proc.returncode, peak, self.stderr())

    def kill(self) -> Finished:
        self.signal(signal.SIGKILL)
        return self.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _high_water(pid: int) -> int:
    """The process's peak RSS so far (``VmHWM``), in bytes; 0 once it is gone.

    Not ``ru_maxrss``: a forked child keeps its parent's high-water mark across
    ``exec``, so a child of a large pytest process would report pytest's size.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0
