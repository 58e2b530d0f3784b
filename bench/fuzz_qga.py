"""Fuzzing the qga agent's reply reader for longer than the suite does (hypothesis, the suite's strategies).

The properties are those of ``tests/qga/test_qga_fuzz.py``: the reader returns
a value or raises an ``AgentError`` (a breach with a known reason), never
anything else, and its buffer holds at most one frame and one read.

    .venv/bin/python bench/fuzz_qga.py --examples 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "qga"))

from test_qga_fuzz import _read, hostile_streams  # noqa: E402

from hotplugd.observe.logs import configure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="streams to try (default 20,000)")
    args = parser.parse_args()
    configure("error")  # stale sync replies are logged at debug level
    count = 0
    start = time.monotonic()
    with asyncio.Runner() as runner:

        @settings(max_examples=args.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(hostile_streams())
        def run(chunks: list[bytes]) -> None:
            nonlocal count
            count += 1
            runner.run(_read(chunks))

        run()
    print(json.dumps({"examples": count, "failures": 0, "seconds": round(time.monotonic() - start, 1)}))


if __name__ == "__main__":
    main()
