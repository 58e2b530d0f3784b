"""``hotplugd status``: the running daemon's memory and view when it answers; else this host's blocks.

Its first line names the backend and what it describes. When the daemon answers
on its metrics endpoint, the block table is the daemon's own census
(``hotplugd_memory_blocks``) and its view (pending, phases, last phase, errors)
is parsed from the same page, so this command needs no other channel to the
daemon and works as any user. When it does not answer, a real host's backend
(``sysfs``: the files under ``/sys/devices/system/memory``, read only) gives the
table; a simulated host exists only inside a running daemon, so none is built.
"""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from hotplugd.commands.plan_text import plan_lines, read_plan, subject_line
from hotplugd.config import Config, MetricsConfig
from hotplugd.errors import BackendError
from hotplugd.model import HOST_DOMAIN, Block, Outcome
from hotplugd.plugin.backend import Backend, BackendSubject
from hotplugd.plugin.hooks import Hooks
from hotplugd.units import format_bytes

#: ``systemctl status``'s (and LSB's) exit status for "program is not running".
EXIT_NOT_RUNNING = 3
FETCH_TIMEOUT = 2.0
_FAILED_OUTCOMES = (Outcome.TRANSIENT, Outcome.PERMANENT, Outcome.ERROR)
#: A wildcard listen address is reached on loopback.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class CensusRow:
    """Blocks of one domain, node, zone and state."""

    domain: str
    node: int
    zone: str
    state: str
    blocks: int = 0
    bytes: int = 0


def census_rows(blocks: Iterable[Block]) -> list[CensusRow]:
    """Blocks and bytes per domain, node, zone and state, like ``lsmem --summary`` split by node."""
    rows: dict[tuple[str, int, str, str], CensusRow] = {}
    for b in blocks:
        key = (b.domain, b.node, b.zone or "-", str(b.state))
        row = rows.setdefault(key, CensusRow(*key))
        row.blocks += 1
        row.bytes += b.size
    return [rows[key] for key in sorted(rows)]


@dataclass
class DaemonView:
    """What the running daemon reports through its metrics."""

    version: str = "?"
    backend: str = "?"
    pending_blocks: int = 0
    pending_bytes: int = 0
    oldest_pending_seconds: float = 0.0
    onlined: int = 0
    failed_blocks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # failed outcomes, by kind
    phases: dict[str, int] = field(default_factory=dict)  # by trigger, non-zero
    last_phase_blocks: int = 0
    last_phase_bytes: int = 0
    last_phase_seconds: float = 0.0
    rescans: dict[str, int] = field(default_factory=dict)  # by reason, non-zero
    dropped: dict[str, int] = field(default_factory=dict)  # by reason, non-zero
    onliners: dict[str, str] = field(default_factory=dict)  # who onlines, by domain (the running plan)
    kernel_onlined: int = 0  # blocks the kernel onlined, verified by hotplugd
    census: list[CensusRow] = field(default_factory=list)  # the daemon's memory blocks, as it reads them

    @classmethod
    def from_exposition(cls, text: str) -> DaemonView:
        """Parse the Prometheus text exposition the daemon serves."""
        samples: Samples = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name].append((s.labels, s.value))

        def one(name: str) -> float:
            return sum(v for _, v in samples.get(name, ()))

        def by(name: str, label: str) -> dict[str, int]:
            out: dict[str, int] = defaultdict(int)
            for labels, v in samples.get(name, ()):
                out[labels.get(label, "")] += int(v)
            return {k: n for k, n in sorted(out.items()) if n}

        build = samples.get("hotplugd_build_info", [({}, 0)])[0][0]
        outcomes = by("hotplugd_online_outcomes_total", "outcome")
        return cls(
            version=build.get("version", "?"), backend=build.get("backend", "?"),
            pending_blocks=int(one("hotplugd_pending_blocks")), pending_bytes=int(one("hotplugd_pending_bytes")),
            oldest_pending_seconds=one("hotplugd_pending_oldest_age_seconds"),
            onlined=int(one("hotplugd_blocks_onlined_total")), failed_blocks=int(one("hotplugd_failed_blocks")),
            outcomes={k: n for k, n in outcomes.items() if k in _FAILED_OUTCOMES},
            phases=by("hotplugd_phases_total", "trigger"),
            last_phase_blocks=int(one("hotplugd_last_phase_blocks")),
            last_phase_bytes=int(one("hotplugd_last_phase_bytes")),
            last_phase_seconds=one("hotplugd_last_phase_duration_seconds"),
            rescans=by("hotplugd_rescans_total", "reason"),
            dropped=by("hotplugd_uevents_dropped_total", "reason"),
            onliners={labels.get("domain", "?"): labels.get("onliner", "?")
                      for labels, v in samples.get("hotplugd_onliner", ()) if v},
            kernel_onlined=int(one("hotplugd_kernel_onlined_blocks_total")),
            census=_census_of(samples),
        )


def _census_of(samples: Samples) -> list[CensusRow]:
    """CensusRows from ``hotplugd_memory_blocks`` and ``hotplugd_memory_bytes`` (zone ``none``: offline)."""
    rows: dict[tuple[str, int, str, str], CensusRow] = {}
    for name, attr in (("hotplugd_memory_blocks", "blocks"), ("hotplugd_memory_bytes", "bytes")):
        for labels, value in samples.get(name, ()):
            try:
                node = int(labels.get("node", ""))
            except ValueError:
                continue
            zone = labels.get("zone", "none")
            key = (labels.get("domain", HOST_DOMAIN), node, "-" if zone == "none" else zone, labels.get("state", "?"))
            row = rows.setdefault(key, CensusRow(*key))
            setattr(row, attr, int(value))
    return [rows[key] for key in sorted(rows) if rows[key].blocks]


def endpoint(cfg: MetricsConfig) -> str:
    """``host:port`` where the daemon of this config serves metrics (wildcards reached on loopback)."""
    host = _LOOPBACK.get(cfg.address, cfg.address)
    return f"[{host}]:{cfg.port}" if ":" in host else f"{host}:{cfg.port}"


def fetch_metrics(where: str, timeout: float = FETCH_TIMEOUT) -> str | None:
    """The exposition text at ``http://where/metrics``, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{where}/metrics", timeout=timeout) as response:  # noqa: S310
            return response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def read_census(backend: Backend) -> list[Block] | None:
    """The backend's blocks now; None when it cannot take a census."""
    try:
        blocks = backend.census()
        return None if blocks is None else list(blocks)
    except OSError as exc:
        raise BackendError(f"cannot read the host's memory blocks ({backend.describe()}): {exc}") from None


def render_census(console: Console, rows: list[CensusRow], source: str) -> None:
    """One row per node, zone and state; with a ``domain`` column first when blocks span several (guests)."""
    domains = any(r.domain != HOST_DOMAIN for r in rows)
    title = f"memory blocks ({source})"
    table = Table(title=title, min_width=len(title))  # a title wider than the table would wrap
    columns = (("domain", "left"),) * domains + (("node", "right"), ("zone", "left"), ("state", "left"),
                                                 ("blocks", "right"), ("size", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row.domain,) * domains, str(row.node), row.zone, row.state, str(row.blocks),
                      format_bytes(row.bytes))
    table.add_section()
    table.add_row("all", *("",) * (2 + domains), str(sum(r.blocks for r in rows)),
                  format_bytes(sum(r.bytes for r in rows)))
    console.print(table)


def render_devices(console: Console, rows: list[dict[str, Any]]) -> None:
    """One row per device (dax devices: mode, node, size, memory tier)."""
    table = Table(title="devices")
    columns = list(rows[0])
    for column in columns:
        table.add_column(column, justify="right" if column in ("node", "size", "tier") else "left")
    for row in rows:
        table.add_row(*(format_bytes(v) if k == "size" and isinstance(v, int) else "-" if v is None else str(v)
                        for k, v in row.items()))
    console.print(table)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"


def render_daemon(console: Console, view: DaemonView, where: str) -> None:
    table = Table(title=f"daemon on {where} (hotplugd {view.version}, backend {view.backend})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("pending", f"{view.pending_blocks} blocks, {format_bytes(view.pending_bytes)}"
                  + (f", oldest waiting {view.oldest_pending_seconds:.1f} s" if view.pending_blocks else ""))
    table.add_row("onliner", "?" if not view.onliners else
                  ", ".join(f"{domain}: {who}" for domain, who in sorted(view.onliners.items())))
    table.add_row("onlined", f"{view.onlined} blocks by hotplugd, {view.kernel_onlined} by the kernel (verified)")
    table.add_row("failed", f"{view.failed_blocks} blocks offline after errors; outcomes: {_counts(view.outcomes)}")
    table.add_row("phases by trigger", _counts(view.phases))
    table.add_row("last phase", f"{view.last_phase_blocks} blocks, {format_bytes(view.last_phase_bytes)} "
                  f"in {view.last_phase_seconds:.3f} s" if view.phases else "none yet")
    table.add_row("rescans", _counts(view.rescans))
    table.add_row("dropped messages", _counts(view.dropped))
    console.print(table)


def status(config: Config, backend: Backend, console: Console | None = None, hooks: Hooks | None = None,
           note: str = "") -> int:
    """The daemon's census and view when it answers (0), else the host's own census where the backend reads a
    real one (3: not running). The first line names the backend the table describes: the daemon's own when it
    answers with another than this command's (a simulated daemon is never shown as this host). What a backend
    onlines, and whether it is a model, its plugin says (``hooks``; without them: the backend's own describe(),
    read as a real host's)."""
    console = console or Console()

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    def subject_of(name: str, options: Mapping[str, Any]) -> BackendSubject:
        return BackendSubject() if hooks is None else hooks.backend_subject(name, options)

    where = endpoint(config.metrics)
    view, absent = _daemon(config, where)
    subject = subject_of(config.backend, config.plugins.get(config.backend, {}))
    if view is not None and view.backend != config.backend:
        say(f"backend {view.backend}: the running daemon's on {where} "
            f"({subject_of(view.backend, {}).text}; this command's config says {config.backend or 'none'})")
        real = False  # this host's plan and devices are not what the daemon onlines
    else:
        say(f"backend {config.backend}: {subject_line(subject, backend)}{note}")
        real = not subject.model
    if hooks is not None and real:
        for line in plan_lines(anyio.run(read_plan, config, hooks, backend)):
            say(line)
    if real:
        devices = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in backend.device_rows()]
        if devices:
            render_devices(console, devices)
    if view is not None:
        if view.census:
            render_census(console, view.census, f"the daemon's, from its metrics on {where}")
        render_daemon(console, view, where)
        return 0
    if real:
        blocks = read_census(backend)
        if blocks is None:
            say(f"{backend.describe()} cannot list memory blocks")
        else:
            render_census(console, census_rows(blocks), f"{config.backend} backend, read now")
    else:
        say(subject.absent or f"no memory table: backend {config.backend} plays a model of a host, which exists "
                              "only inside a running daemon")
    say(absent)
    return EXIT_NOT_RUNNING


def _daemon(config: Config, where: str) -> tuple[DaemonView | None, str]:
    """The daemon's view from its metrics endpoint, or None and why there is none."""
    if not config.metrics.enabled or config.metrics.port == 0:
        return None, f"daemon's view unavailable: metrics are not served on a fixed port ({where})"
    text = fetch_metrics(where)
    if text is None:
        return None, f"daemon not running (no answer on {where})"
    try:
        view = DaemonView.from_exposition(text)
    except ValueError:
        view = None
    if view is None or view.version == "?":
        return None, f"daemon not running (something else answers on {where}: not hotplugd's metrics)"
    return view, ""
