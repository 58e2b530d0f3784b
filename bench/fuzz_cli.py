"""Fuzzing of the whole command line: every ``hotplugd`` subcommand with random flags and values, in-process.

A sibling of ``bench/fuzz_config.py`` (which fuzzes the config file through ``check-config``). Each input is
one command line made by ``tests/reliability/clifuzz.py`` from a seeded random generator: a subcommand (run,
plugins, status, check, check-config, simulate), up to eight of its flags, values from each flag's own
vocabulary, edge values (bounds, NaN, 2^64, PiB and EiB sizes, empty text) and random text, ``--set`` over the
schema's keys and the built-in plugins'. The property (the same module, shared with the in-suite hypothesis
test): no exception escapes ``main()``, the exit code is one the commands document (0, 1, 2, 3, 78), no
traceback is printed, no command line runs past 60 s, the process's peak RSS stays under 1 GiB. The harness
keeps every run inside its own temp directory and the fake sysfs tree (see clifuzz.py).

A failure does not stop the run: failures are grouped by their first line and the first command line of each
group is printed, so one run lists every distinct defect. Exit 1 when there was any.

    .venv/bin/python bench/fuzz_cli.py                  # 100,000 inputs; --runs N, --seed S, --commands a,b
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.clifuzz import COMMANDS, harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to run (default 100,000)")
    parser.add_argument("--seed", type=int, default=1, help="the generator's seed")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="subcommands to fuzz (comma-separated)")
    parser.add_argument("--every", type=int, default=10_000, help="print the figures every N inputs")
    args = parser.parse_args()
    # A generated size must never take the shared machine's memory: past 4 GiB of address space, MemoryError.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    commands = args.commands.split(",")
    rng = random.Random(args.seed)
    failures: dict[str, dict[str, object]] = {}
    start = time.monotonic()
    slowest = (0.0, [""])
    with harness() as h:
        for i in range(1, args.runs + 1):
            argv = h.argv(rng)
            while argv[0] not in commands:
                argv = h.argv(rng)
            began = time.monotonic()
            try:
                h.run(argv)
            except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then the run goes on
                if isinstance(exc, KeyboardInterrupt):
                    raise
                first = (str(exc).splitlines() or [""])[0][:160]
                kind = f"{type(exc).__name__}: {first}" if not isinstance(exc, AssertionError) else first
                name = f"{argv[0]}: {type(exc).__name__} {_shape(first)}"
                if name not in failures:  # each new kind at once: a run cut short still lists what it found
                    print(json.dumps({"new_failure": name, "argv": argv, "error": kind}, ensure_ascii=False),
                          flush=True)
                group = failures.setdefault(name, {"count": 0, "first": argv, "error": kind})
                group["count"] = int(group["count"]) + 1  # type: ignore[call-overload]
            took = time.monotonic() - began
            if took > slowest[0]:
                slowest = (took, argv)
            if i % args.every == 0 or i == args.runs:
                seconds = time.monotonic() - start
                failed = sum(int(g["count"]) for g in failures.values())  # type: ignore[call-overload]
                print(json.dumps({"inputs": i, "failures": failed,
                                  "seconds": round(seconds, 1), "inputs_per_second": round(i / seconds, 1),
                                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
                                  "slowest_seconds": round(slowest[0], 2)}), flush=True)
        print(json.dumps({"exit_codes": h.codes}), flush=True)
    print(json.dumps({"slowest": {"seconds": round(slowest[0], 2), "argv": slowest[1]}}))
    for name, group in sorted(failures.items(), key=lambda kv: -int(kv[1]["count"])):  # type: ignore[call-overload]
        print(json.dumps({"failure": name, **group}, ensure_ascii=False))
    return 1 if failures else 0


def _shape(line: str) -> str:
    """A failure's first line with the command line and numbers taken out, so alike failures group."""
    head = line.split(": exit", 1)[0] if line.startswith("hotplugd ") else line
    return "".join("#" if c.isdigit() else c for c in (line[len(head):] if line.startswith("hotplugd ") else head))[:80]


if __name__ == "__main__":
    sys.exit(main())
