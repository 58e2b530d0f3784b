"""What an idle daemon costs: its own CPU ticks and wake-ups over a minute, against a baseline run beside it.

An idle daemon (simulated backend, no scenario, metrics served) should sleep:
on every host of a fleet it sits idle almost all the time. This starts
``hotplugd run`` of this tree and of a baseline commit (a detached git
worktree of ``--baseline``, default the commit before the queue's numbers
were published on change), both at once so they share the machine's load,
lets them settle, then counts for ``--duration`` seconds:

- CPU: the process's ``utime + stime`` from ``/proc/PID/stat`` (clock ticks,
  ``SC_CLK_TCK`` a second), as a percentage of one CPU;
- wake-ups: the voluntary context switches of every thread
  (``/proc/PID/task/*/status``): each is one sleep the thread came back from.

Both daemons run the same interpreter and virtualenv; the baseline's sources
come first on its ``PYTHONPATH`` (the editable install's finder comes after
``sys.path``), and each prints the file its ``hotplugd`` came from. Repeated
``--reps`` times (fresh daemons each time); medians; the ratio is this tree
over the baseline. ``--baseline ''`` runs this tree alone.

    .venv/bin/python bench/idle.py [--duration 60] [--settle 5] [--reps 3] [--baseline REF]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The last commit before idle meant asleep (the queue's numbers were published every 0.1 s).
BEFORE = "c72fc96"
CONFIG = """backend = "simulated"
log_level = "warning"
state_directory = "{state}"
[metrics]
enabled = true
port = 0
"""


@dataclass
class Sample:
    ticks: int
    wakeups: int


def sample(pid: int) -> Sample:
    """The process's CPU ticks (all threads, dead ones included) and its live threads' voluntary switches."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    wakeups = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    wakeups += int(line.split()[1])
        except FileNotFoundError:  # a thread that just ended
            continue
    return Sample(ticks, wakeups)


class Daemon:
    """``hotplugd run`` with sources from ``source`` (a checkout), its own config and state."""

    def __init__(self, label: str, source: Path, workdir: Path) -> None:
        self.label = label
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "hotplugd.toml"
        config.write_text(CONFIG.format(state=workdir / "state"))
        self.ready = workdir / "ready"
        env = {**os.environ, "PYTHONPATH": f"{source}:{source / 'plugins'}"}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        code = ("import sys, hotplugd; print('hotplugd from', hotplugd.__file__, file=sys.stderr, flush=True); "
                "from hotplugd.commands.cli import main; sys.exit(main())")
        self.log = (workdir / "log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", code, "run", "--config", str(config),
                                      "--ready-file", str(self.ready)], env=env, cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.label}: not ready (see {self.log.name})")
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def checkout(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), ref], check=True)
    return where


def run_once(sources: dict[str, Path], tmp: Path, rep: int, settle: float, duration: float) -> dict[str, Sample]:
    daemons = [Daemon(label, source, tmp / f"{label}-{rep}") for label, source in sources.items()]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        time.sleep(settle)
        before = {d.label: sample(d.proc.pid) for d in daemons}
        time.sleep(duration)
        after = {d.label: sample(d.proc.pid) for d in daemons}
        for daemon in daemons:
            if daemon.proc.poll() is not None:
                raise SystemExit(f"{daemon.label} ended during the count (see {daemon.log.name})")
    finally:
        for daemon in daemons:
            daemon.close()
    return {label: Sample(after[label].ticks - before[label].ticks, after[label].wakeups - before[label].wakeups)
            for label in before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds counted per repetition (default 60)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready before counting (default 5)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, fresh daemons each (default 3)")
    parser.add_argument("--baseline", default=BEFORE, help=f"git ref run beside this tree (default {BEFORE}; '': none)")
    args = parser.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="hotplugd-idle-") as name:
        tmp = Path(name)
        sources = {f"this tree ({commit})": ROOT}
        base_label = ""
        try:
            if args.baseline:
                base_label = f"baseline ({args.baseline})"
                sources[base_label] = checkout(args.baseline, tmp / "baseline")
            runs = []
            for rep in range(args.reps):
                runs.append(run_once(sources, tmp, rep, args.settle, args.duration))
                print(f"rep {rep + 1}: " + "; ".join(f"{label} {s.ticks} ticks, {s.wakeups} wake-ups"
                                                    for label, s in runs[-1].items()), flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "baseline")],
                               check=False)
    print(f"\nidle daemon (simulated backend, no scenario, metrics served), {args.duration:g} s counted "
          f"after {args.settle:g} s, median of {args.reps}; CLK_TCK {hz}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| daemon | CPU ticks | CPU % of one core | wake-ups / s |")
    print("|---|---|---|---|")
    medians = {}
    for label in sources:
        ticks = statistics.median(r[label].ticks for r in runs)
        wakeups = statistics.median(r[label].wakeups for r in runs)
        medians[label] = (ticks, wakeups)
        print(f"| {label} | {ticks:g} | {100 * ticks / hz / args.duration:.3f} | {wakeups / args.duration:.2f} |")
    if base_label:
        (ticks, wakeups), (base_ticks, base_wakeups) = medians[f"this tree ({commit})"], medians[base_label]
        ratio = lambda a, b: f"{a / b:.3f}x" if b else "n/a (baseline 0)"  # noqa: E731
        print(f"\nthis tree / baseline: CPU {ratio(ticks, base_ticks)}, wake-ups {ratio(wakeups, base_wakeups)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
