"""hotplugd running in a test guest: start it, wait until ready, read its metrics, stop it.

::

    daemon = GuestDaemon.start(guest, "--ratio", "0")
    ... hot-add, wait ...
    daemon.stop()                       # SIGTERM; the daemon writes its textfile on the way out
    m = daemon.metrics()
    m.total("hotplugd_blocks_onlined_total")

Every daemon gets its own ready file (``/run/<name>.ready`` in the guest) and metrics textfile
(in the guest's share, read from this machine). The HTTP metrics server is off. On a failure,
:meth:`GuestDaemon.diagnose` makes Python dump every thread's stack (``PYTHONFAULTHANDLER``
and SIGABRT) and returns it with the daemon's log and the guest's kernel log.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import CommandResult, Guest, GuestError, GuestProcess
from prometheus_client.parser import text_string_to_metric_families

#: Python starts slowly in the guest (5 to 15 s to import hotplugd, more on a loaded machine).
READY_TIMEOUT = 120.0
_names = itertools.count(1)


@dataclass(frozen=True)
class Metrics:
    """The samples of one textfile: ``{(name, ((label, value), ...)): value}``."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed per value of ``label`` (zeros left out)."""
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name and v:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


class GuestDaemon:
    """One ``hotplugd run --backend sysfs`` in a guest."""

    def __init__(self, guest: Guest, proc: GuestProcess, name: str) -> None:
        self.guest = guest
        self.proc = proc
        self.name = name
        self.result: CommandResult | None = None

    @property
    def textfile(self) -> Path:
        """The metrics textfile, seen from this machine."""
        return self.guest.share / f"{self.name}.prom"

    @classmethod
    def spawn(cls, guest: Guest, *args: str, env: dict[str, str] | None = None,
              textfile: bool = True) -> tuple[GuestDaemon, str]:
        """Start it without waiting; returns the daemon and its ready file's path in the guest.

        ``textfile=False`` leaves the metrics settings at their defaults (an HTTP server on
        127.0.0.1, no textfile): what a benchmark of the default config must run.
        """
        name = f"hotplugd-{next(_names)}"
        ready = f"/run/{name}.ready"
        metrics = ("--set", "metrics.enabled=false",
                   "--set", f'metrics.textfile="{guest.guest_share}/{name}.prom"') if textfile else ()
        proc = guest.start_hotplugd("--ready-file", ready, *metrics, *args,
                                    env={"PYTHONFAULTHANDLER": "1", **(env or {})})
        return cls(guest, proc, name), ready

    @classmethod
    def start(cls, guest: Guest, *args: str, env: dict[str, str] | None = None, textfile: bool = True,
              timeout: float = READY_TIMEOUT) -> GuestDaemon:
        """Start it and wait until it wrote its ready file (its uevent socket is bound, coldplug queued)."""
        daemon, ready = cls.spawn(guest, *args, env=env, textfile=textfile)
        try:
            guest.agent.wait_path(ready, timeout)
        except GuestError as exc:
            raise GuestError(f"hotplugd {' '.join(args)} not ready: {exc}\n{daemon.diagnose()}") from exc
        return daemon

    # -- the end ---------------------------------------------------------------------------------

    def stop(self, timeout: float = 30) -> CommandResult:
        """SIGTERM and wait; raise (with a stack dump) unless it exits 0 within ``timeout``."""
        self.proc.signal(signal.SIGTERM)
        result = self.proc.wait(timeout)
        if result.returncode is None:
            raise GuestError(f"{self.name} ignored SIGTERM for {timeout} s\n{self.diagnose()}")
        self.result = result
        if result.returncode != 0:
            raise GuestError(f"{self.name} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def kill(self) -> CommandResult:
        """SIGKILL (no clean-up, no final textfile) and reap."""
        self.proc.signal(signal.SIGKILL)
        self.result = self.proc.wait(30)
        return self.result

    def alive(self) -> bool:
        return self.proc.poll().returncode is None

    def diagnose(self) -> str:
        """Every thread's stack (SIGABRT under faulthandler), the daemon's log and the guest's dmesg."""
        if self.alive():
            self.proc.signal(signal.SIGABRT)
        result = self.proc.wait(10)
        dmesg = self.guest.agent.run(["/bin/sh", "-c", "dmesg | tail -40"], check=False).stdout
        return (f"--- {self.name} (exit {result.returncode}) stderr ---\n{result.stderr[-6000:]}\n"
                f"--- guest dmesg ---\n{dmesg}")

    # -- what it said ------------------------------------------------------------------------------

    def metrics(self) -> Metrics:
        """Its last textfile (written every second, and once more on a clean stop)."""
        return Metrics.parse(self.textfile.read_text())

    def wait_metrics(self, predicate: Callable[[Metrics], bool], timeout: float = 30, what: str = "") -> Metrics:
        """Re-read the textfile (refreshed every second) until ``predicate`` holds; raise after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.metrics()
            except (OSError, ValueError):  # not written yet, or caught mid-replace
                m = None
            if m is not None and predicate(m):
                return m
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: metrics never showed {what or predicate} within {timeout} s")
            time.sleep(0.1)

    def final_status(self) -> str:
        """The status of its ``stopped`` log line ("pending 0 blocks, onlined N, failed 0")."""
        stopped = [e for e in self.logs() if e.get("event") == "stopped"]
        return str(stopped[-1].get("status", "")) if stopped else ""

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far (structlog writes them to stderr)."""
        result = self.result or self.proc.poll()
        return list(parse_log(result.stderr.splitlines()))

    def __repr__(self) -> str:
        return f"<GuestDaemon {self.name} pid={self.proc.pid}>"


def parse_log(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue
