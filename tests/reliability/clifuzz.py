"""Every ``hotplugd`` subcommand run in-process with generated flags and values, and the property every run keeps.

Shared by ``test_cli_fuzz.py`` (hypothesis) and ``bench/fuzz_cli.py`` (100,000 random inputs).

The property: no exception escapes ``main()`` (argparse's usage errors are its ``SystemExit(2)``), the exit
code is one a subcommand documents (0, 1, 2, 3, 78), an error is one ``hotplugd: error:`` message with no
traceback, no run outlives ``DEADLINE`` (a hang), and the process's peak RSS stays under ``MAX_RSS``.

The harness keeps every run on this machine's side of the fence: the sysfs backend always reads and writes the
fake tree (:class:`hotplugd.testing.FakeSysfs`), never /sys; every path a run may write (the state directory,
the textfile, the simulated state file, the ready file) lies in the harness's own directory; metrics are served
and asked on loopback only; backends that would reach guests or libvirt are validated but not built. ``run``
plays until idle (the simulated scenario's end) instead of waiting for a signal.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import random
import resource
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from hotplugd import config as cfgmod
from hotplugd.commands import cli
from hotplugd.errors import ConfigError
from hotplugd_sysfs.backend import SysfsBackend
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

#: Exit codes the subcommands document (`hotplugd COMMAND --help`).
EXIT_CODES = {0, 1, 2, 3, 78}
#: Longer than this for one command line is a hang.
DEADLINE = 60
#: Peak RSS of the whole fuzzing process.
MAX_RSS = 1 << 30
#: Backends that reach outside this process (guests' agents, libvirtd): validated, never built here.
NOT_BUILT = ("qga", "libvirt")
COMMANDS = ["run", "plugins", "status", "check", "check-config", "simulate"]
CONFIG_FLAGS = ["--config", "--set", "--backend", "--ratio", "--log-level"]
OWN_FLAGS = {"run": ["--ready-file"], "simulate": ["--no-progress", "--metrics", "--kernel", "--from-host", "--size"],
             "plugins": ["--config"]}
PLUGIN_KEYS = ["plugins.simulated.nodes", "plugins.simulated.block_size", "plugins.simulated.scenario",
               "plugins.simulated.kernel", "plugins.simulated.boot_memory", "plugins.simulated.cpus_per_node",
               "plugins.sysfs.concurrency", "plugins.sysfs.rcvbuf", "plugins.sysfs.writer", "plugins.qga.guest",
               "plugins.qga.timeout", "zones.nodes.1.policy", "zones.nodes.1024.policy", "backend"]
KEYS = [key for key, _default, _help in cfgmod.describe()] + PLUGIN_KEYS
EDGES: list[Any] = [0, 1, -1, 2, 1023, 1024, 2**63 - 1, 2**63, 2**64, 10**30, float("nan"), float("inf"), 1e308,
                    0.5, "1GiB", "1PiB", "16EiB", "17EiB", "12345", "99999999999999999999TiB", "200ms", "86401s",
                    "auto", "kernel", "hotplugd", "movable", "anolis", "mainline", "per-block", "simulated", "sysfs",
                    "qga", "libvirt", "", "loud", "abc", "-1", "nan", "inf", "1e999", "0x10", "\x00", "é", "[", "{"]
#: Values a flag takes (the rest of the time it gets any text).
GOOD = {"--backend": ["simulated", "sysfs", "qga", ""], "--log-level": ["debug", "info", "warning", "error"],
        "--ratio": ["0", "0.5", "1", "2", "64", "65"], "--kernel": ["mainline", "per-block", "anolis"],
        "--size": ["12345", "128MiB", "1GiB", "24GiB", "1TiB", "0", "1PiB", "16EiB"]}
#: Small scenarios: the run ends in well under a second (the user's --set may still ask for more).
SMALL = ['plugins.simulated.scenario=[{kind="dimm", size="512MiB", node=0}]', "plugins.simulated.nodes=1",
         'plugins.simulated.boot_memory="256MiB"', "metrics.port=0"]


class Hang(Exception):
    """A command line ran past DEADLINE."""


def toml_value(value: Any) -> str:
    """``value`` as TOML text (strings through JSON's escapes, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@dataclass
class Harness:
    """The fence around the runs: a fake tree, a scratch directory, the patched seams."""

    base: Path
    fake: FakeSysfs = field(init=False)
    codes: dict[str, dict[int, int]] = field(default_factory=dict)
    runs: int = 0

    def __post_init__(self) -> None:
        self.fake = FakeSysfs(self.base / "tree", nodes={0: "0-1", 1: "2-3"})
        self.fake.add_blocks(range(0, 8), node=0, state="online", zones=("Normal",))
        self.fake.add_blocks(range(32, 36), node=1)
        (self.base / "scratch").mkdir()
        self.config_path = self.base / "hotplugd.toml"
        self.config_path.write_text('backend = "simulated"\n')
        self.config_path.chmod(0o644)

    def paths(self) -> list[str]:
        """Paths a generated flag may name: the fake tree, the scratch directory, some that do not exist."""
        return [str(self.fake.sys), str(self.base / "scratch"), str(self.base / "absent" / "ready"),
                str(self.config_path), str(self.base / "absent.toml"), str(self.base), "/nonexistent/x", ""]

    def fenced(self, config: cfgmod.Config) -> cfgmod.Config:
        """``config`` with everything that could reach outside the harness pointed inside it."""
        scratch = self.base / "scratch"
        config.state_directory = str(scratch / "state")
        if config.metrics.textfile:
            config.metrics.textfile = str(scratch / "hotplugd.prom")
        config.metrics.address = "127.0.0.1"
        tables = dict(config.plugins)
        sysfs = dict(tables.get("sysfs", {}))
        sysfs.update(self.fake.options())
        tables["sysfs"] = sysfs
        if isinstance(tables.get("simulated"), dict) and tables["simulated"].get("state_file"):
            tables["simulated"] = {**tables["simulated"], "state_file": str(scratch / "simulated.state")}
        config.plugins = tables
        if config.backend in NOT_BUILT:
            raise ConfigError(f"fuzz harness: the {config.backend} backend is validated, not built here")
        return config

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """The seams: config loading fenced, run until idle, metrics asked on loopback only, the
        entry-point list and the plugin managers built once (they do not depend on the flags), and the sysfs
        backend's files read and written through the fake kernel (plain files written over would read
        ``onlinee``; since blocks found offline at start are onlined at once, runs write them)."""
        from hotplugd.commands import status as status_mod
        from hotplugd.daemon import Daemon

        managers = functools.cache(cli.make_manager)
        real_load, real_run, real_fetch = cli.load, Daemon.run, status_mod.fetch_metrics

        def load(path: Any, overrides: Any = ()) -> cfgmod.Config:
            return self.fenced(real_load(path, overrides))

        async def run_until_idle(daemon: Any, **kwargs: Any) -> None:
            if daemon.config.backend == "simulated":  # its scenario ends: the daemon goes idle
                await real_run(daemon, **{**kwargs, "until_idle": True})
                return
            try:
                async with anyio.create_task_group() as tg:  # a real host's events never end: stop once ready
                    await tg.start(functools.partial(real_run, daemon))
                    daemon.scheduler.stop()
            except BaseExceptionGroup as group:  # this wrapper's own group: hand on the daemon's error as it is
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise

        def fetch(where: str, timeout: float = 0.5) -> str | None:
            host = where.rsplit(":", 1)[0].strip("[]")
            return real_fetch(where, 0.5) if host in ("127.0.0.1", "::1", "localhost") else None

        def sysfs_on_the_fake(cls: type[SysfsBackend], options: Any, io: Any = None) -> SysfsBackend:
            return real_sysfs(options, self.fake.io)  # the fake kernel's seam: a write to state onlines, as sysfs

        real_sysfs = SysfsBackend.from_options
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SysfsBackend, "from_options", classmethod(sysfs_on_the_fake))
            mp.setattr(importlib.metadata, "entry_points", functools.cache(importlib.metadata.entry_points))
            mp.setattr(cli, "make_manager", lambda disabled=(): managers(tuple(disabled)))
            mp.setattr(cli, "load", load)
            mp.setattr(Daemon, "run", run_until_idle)
            mp.setattr(status_mod, "fetch_metrics", fetch)
            yield

    def argv(self, rng: random.Random) -> list[str]:
        """One command line: a subcommand and up to eight of its flags with generated values."""
        command = rng.choice(COMMANDS)
        flags = ([] if command == "plugins" else CONFIG_FLAGS) + OWN_FLAGS.get(command, [])
        argv = [command]
        if command in ("run", "simulate") and rng.random() < 0.9:
            argv += [arg for s in SMALL for arg in ("--set", s)]
            if command == "run":
                argv += ["--backend", "simulated"]
        for _ in range(rng.randrange(0, 9)):
            if rng.random() < 0.03:  # a flag no command has, or a stray argument
                argv.append(rng.choice(["--nope", "-x", "extra", "--", "--set"]))
                continue
            flag = rng.choice(flags)
            if flag in ("--no-progress", "--metrics"):
                argv.append(flag)
            elif flag == "--config":
                argv += [flag, rng.choice(self.paths())]
            elif flag == "--ready-file":
                argv += [flag, rng.choice([str(self.base / "scratch" / "ready"), str(self.base / "absent" / "r")])]
            elif flag == "--from-host":
                argv += [flag, rng.choice(self.paths())] if rng.random() < 0.7 else [flag]
            elif flag == "--set":
                argv += [flag, self.override(rng)]
            else:
                good = GOOD.get(flag)
                argv += [flag, rng.choice(good) if good and rng.random() < 0.7 else self.text(rng)]
        return argv

    def override(self, rng: random.Random) -> str:
        if rng.random() < 0.1:
            return self.text(rng)
        key = rng.choice(KEYS) if rng.random() < 0.9 else self.text(rng) or "k"
        return f"{key}={toml_value(self.value(rng))}" if rng.random() < 0.85 else f"{key}={self.text(rng)}"

    def value(self, rng: random.Random, depth: int = 0) -> Any:
        kind = rng.randrange(0, 7 if depth < 3 else 5)
        if kind == 0:
            return rng.choice(EDGES)
        if kind == 1:
            return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-5, 300)
        if kind == 2:
            return rng.uniform(-1e6, 1e6)
        if kind == 3:
            return rng.random() < 0.5
        if kind == 4:
            return self.text(rng)
        if kind == 5:
            return [self.value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
        return {self.text(rng) or "k": self.value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}

    def text(self, rng: random.Random) -> str:
        if rng.random() < 0.6:
            return str(rng.choice(EDGES))
        alphabet = "abcdefgkmsGiBEP0123456789.-_= \"'[]{}\\/é\x00\n"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))

    def run(self, argv: list[str]) -> tuple[int, str]:
        """``hotplugd ARGV`` in-process: its exit code and stderr, after asserting the property."""
        out, err = io.StringIO(), io.StringIO()

        def alarm(_signum: int, _frame: Any) -> None:
            raise Hang(f"hotplugd {' '.join(argv)}: still running after {DEADLINE} s")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(DEADLINE)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(argv)
                except SystemExit as exited:  # argparse: --help (0) and usage errors (2)
                    code = exited.code if isinstance(exited.code, int) else 2
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        message = err.getvalue()
        assert code in EXIT_CODES, f"hotplugd {argv!r}: exit {code}\n{message}"
        assert "Traceback" not in message and "Traceback" not in out.getvalue(), f"hotplugd {argv!r}:\n{message}"
        if code == 78:
            assert "hotplugd: error: " in message, f"hotplugd {argv!r}: exit 78 without its message\n{message}"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert rss < MAX_RSS, f"hotplugd {argv!r}: peak RSS {rss >> 20} MiB"
        self.runs += 1
        counts = self.codes.setdefault(argv[0], {})
        counts[code] = counts.get(code, 0) + 1
        return code, message


@contextlib.contextmanager
def harness() -> Iterator[Harness]:
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as base:
        h = Harness(Path(base))
        with h.patched():
            yield h
