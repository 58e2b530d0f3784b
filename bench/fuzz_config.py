"""Coverage-guided fuzzing of ``hotplugd check-config`` with atheris (libFuzzer for Python).

Every input becomes one config file and up to three ``--set`` strings; the
first byte picks how the file is made from the rest:

- 0: the bytes themselves (encodings, tomllib's syntax);
- 1: the reference config (config/hotplugd.toml) with the bytes spliced in at a point they choose;
- 2: a document of schema keys (core and plugins) with values the bytes choose, down to nesting
  and numbers past every bound, so the input reaches the validators and the plugins' checks.

The property, checked on each (tests/reliability/checkconfig.py, shared with the in-suite
hypothesis test): no exception escapes ``main()``, the exit code is 0 or 78, and 78 comes
with one message and no traceback. Inputs that do not depend on the config (the parser,
the plugin manager) are built once; reading, parsing and validating run in full.

    .venv/bin/python bench/fuzz_config.py             # 100,000 inputs; more with --runs N
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - a bench script's own dependency
    sys.exit("atheris is not installed: .venv/bin/pip install atheris (or pip install -e '.[fuzz]')")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
with atheris.instrument_imports(include=["hotplugd.config", "hotplugd.units", "tomllib"]):
    from hotplugd import config as cfgmod
    from tests.reliability.checkconfig import check_config, dotted, reused_plugins, toml_value

REFERENCE = (ROOT / "config" / "hotplugd.toml").read_text()
KEYS = [key for key, _default, _help in cfgmod.describe()] + [
    "plugins.simulated.nodes", "plugins.simulated.block_size", "plugins.simulated.scenario", "plugins.sysfs.rcvbuf",
    "plugins.qga.guest", "plugins.qga.timeout", "zones.nodes.1.policy", "zones.nodes.1024.policy"]
EDGES = [0, 1, -1, 1023, 1024, 2**63 - 1, 2**63, 2**64, cfgmod.MAX_BLOCKS, cfgmod.MAX_BLOCKS + 1, 10**30,
         float("nan"), float("inf"), 1e308, 0.5, "1GiB", "99999999999999999999TiB", "200ms", "86401s", "auto", "kernel"]


def value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    """A TOML value the bytes choose; arrays and tables nest up to 20 deep (past MAX_DEPTH)."""
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 20 else 5)
    if kind == 0:
        return fdp.PickValueInList(EDGES)
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))
    if kind == 2:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 3:
        return fdp.ConsumeBool()
    if kind in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 6:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {fdp.ConsumeUnicodeNoSurrogates(6): value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


def key(fdp: atheris.FuzzedDataProvider) -> str:
    return fdp.PickValueInList(KEYS) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeUnicodeNoSurrogates(12) or "k"


def document(mode: int, fdp: atheris.FuzzedDataProvider) -> bytes:
    if mode == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    if mode == 1:
        at = fdp.ConsumeIntInRange(0, len(REFERENCE))
        return REFERENCE[:at].encode() + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) + REFERENCE[at:].encode()
    lines = [f"{dotted(key(fdp))} = {toml_value(value(fdp))}" for _ in range(fdp.ConsumeIntInRange(0, 8))]
    return "\n".join(lines).encode()


class Target:
    def __init__(self, path: Path, runs: int) -> None:
        self.path, self.runs = path, runs
        self.inputs = 0
        self.codes: dict[int, int] = {}
        self.start = time.monotonic()

    def __call__(self, raw: bytes) -> None:
        self.inputs += 1
        fdp = atheris.FuzzedDataProvider(raw)
        mode = fdp.ConsumeIntInRange(0, 2)
        sets = [f"{key(fdp)}={toml_value(value(fdp))}" if fdp.ConsumeBool() else fdp.ConsumeUnicode(40)
                for _ in range(fdp.ConsumeIntInRange(0, 3))]
        self.path.write_bytes(document(mode, fdp))
        code, _err = check_config(["--config", str(self.path), *(f"--set={s}" for s in sets)])
        self.codes[code] = self.codes.get(code, 0) + 1
        if self.inputs % 10_000 == 0 or self.inputs == self.runs:
            seconds = time.monotonic() - self.start
            print(json.dumps({"inputs": self.inputs, "exit_codes": self.codes, "seconds": round(seconds, 1),
                              "inputs_per_second": round(self.inputs / seconds)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to run (default 100,000)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags (after --)")
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="fuzz-config-")) / "hotplugd.toml"
    path.write_text("")
    path.chmod(0o644)  # as root, a config others can write is refused: keep the mode a config has
    target = Target(path, args.runs)
    argv = [sys.argv[0], f"-runs={args.runs}", f"-seed={args.seed}", "-max_len=8192", "-print_final_stats=1",
            *args.libfuzzer]
    with reused_plugins():
        atheris.Setup(argv, target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
