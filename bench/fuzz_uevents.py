"""Coverage-guided fuzzing of the uevent parser and intake with atheris (libFuzzer for Python).

Every input is one netlink datagram: its first byte picks the sender and the
truncation flag, the rest are the bytes. The properties, checked on each:

- ``parse``, ``memory_header`` and ``Intake.decode`` never raise;
- ``parse`` gives None or a UEvent whose properties (``seqnum``, ``synthetic``,
  ``memory_index``) do not raise either;
- the cheap triage agrees with the full parse: a memory block event always
  passes ``memory_header``;
- the intake yields an event only for the kernel's (sender 0), untruncated
  datagrams, and accounts for every datagram (an event, a counted drop or a skip).

The seed corpus is the real kernel captures in ``tests/sysfs/data/uevents`` when present.

    .venv/bin/pip install atheris            # a manylinux wheel; no clang needed
    .venv/bin/python bench/fuzz_uevents.py   # 1,000,000 inputs; more with --runs N
    .venv/bin/python bench/fuzz_uevents.py -- -max_len=9000   # extra libFuzzer flags after --
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - a bench script's own dependency
    sys.exit("atheris is not installed: .venv/bin/pip install atheris (or pip install -e '.[fuzz]')")

with atheris.instrument_imports(include=["hotplugd_sysfs"]):
    from hotplugd_sysfs.intake import Intake
    from hotplugd_sysfs.netlink import Datagram
    from hotplugd_sysfs.uevent import MAX_UEVENT, UEvent, memory_header, parse

from hotplugd.observe.logs import configure  # noqa: E402

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "sysfs" / "data" / "uevents"
SENDERS = (0, 0, 0, 1, 4242, -1)  # mostly the kernel: that is where the parser's depth is


class Target:
    """The fuzz target and its bookkeeping (one Intake across all inputs, as in the daemon)."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.intake = Intake()
        self.inputs = 0
        self.events = 0
        self.start = time.monotonic()

    def __call__(self, raw: bytes) -> None:
        self.inputs += 1
        control, data = (raw[0], raw[1:]) if raw else (0, b"")
        datagram = Datagram(data, SENDERS[control % len(SENDERS)], bool(control & 0x80))

        event = parse(data)
        header = memory_header(data)
        assert header in (True, False, None)
        if event is not None:
            assert isinstance(event, UEvent) and len(data) <= MAX_UEVENT
            event.seqnum, event.synthetic  # noqa: B018 - properties must not raise
            if event.memory_index is not None:
                assert event.memory_index >= 0
                assert header is True, f"triage skipped a memory event: {data[:120]!r}"

        accounted = sum(self.intake.dropped.values()) + self.intake.skipped + self.events
        decoded = self.intake.decode(datagram)
        if decoded is not None:
            assert datagram.sender == 0 and not datagram.truncated
            assert decoded.index >= 0 and event is not None and event.memory_index == decoded.index
            self.events += 1
        assert sum(self.intake.dropped.values()) + self.intake.skipped + self.events == accounted + 1
        if self.inputs % 100_000 == 0 or self.inputs == self.runs:
            self.report()

    def report(self) -> None:
        seconds = time.monotonic() - self.start
        print(json.dumps({"inputs": self.inputs, "memory_events": self.events, "dropped": dict(self.intake.dropped),
                          "skipped": self.intake.skipped, "seconds": round(seconds, 1),
                          "inputs_per_second": round(self.inputs / seconds) if seconds else None}), flush=True)


def seed_corpus(directory: Path) -> Path:
    """Write the real captures (one datagram per file, sender byte 0) as libFuzzer's seed corpus."""
    for path in sorted(CAPTURES.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                (directory / f"{path.stem}-{number}").write_bytes(b"\0" + base64.b64decode(json.loads(line)["b64"]))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags (after --)")
    args = parser.parse_args()
    configure("error")  # the intake logs every drop at debug level
    target = Target(args.runs)  # libFuzzer ends the process itself: the target reports as it goes
    corpus = seed_corpus(Path(tempfile.mkdtemp(prefix="uevent-corpus-")))
    argv = [sys.argv[0], f"-runs={args.runs}", f"-seed={args.seed}", f"-max_len={MAX_UEVENT + 64}",
            "-print_final_stats=1", *args.libfuzzer, str(corpus)]
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
