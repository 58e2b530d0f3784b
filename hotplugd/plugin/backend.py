"""The backend contract: how hotplugd reads a host and onlines its memory blocks.

Plugins register backend factories through the ``hotplugd_register_backends``
hook; the daemon builds the one the config names. All I/O is async and lives
in the backend object: the core never blocks the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.registry import Collector

from hotplugd.errors import BackendError, ConfigError, HotplugdError, PluginError
from hotplugd.model import (
    HOST_DOMAIN,
    Block,
    BlockEvent,
    KernelKnobs,
    OnlineResult,
    Rescan,
    Scan,
    Topology,
    ZoneRequest,
)


class Backend(abc.ABC):
    """One host (or fleet) whose memory blocks hotplugd onlines.

    Life cycle, driven by the daemon: ``await start()`` (bind event sockets
    first, so nothing is missed between the scan and the stream), ``scan()``,
    then ``events()`` and ``online()`` concurrently, and ``await stop()``.
    """

    #: How many ``online()`` calls can truly run at once within one domain (one
    #: kernel). Mainline sysfs serialises every online under ``device_hotplug_lock``:
    #: 1. The daemon never runs more workers than this in a domain, and measures
    #: what it really got.
    concurrency: int = 1

    #: How many domains may run a final phase at the same time (0: all of them).
    #: A backend onlining inside guests sets it when the host's cores bound the gain.
    parallel_domains: int = 0

    def domain_concurrency(self, domain: str) -> int:
        """The real concurrency of ``domain``'s kernel; by default :attr:`concurrency` for every domain."""
        return self.concurrency

    async def start(self) -> None:  # noqa: B027 - optional: a backend with nothing to acquire keeps it
        """Acquire resources (sockets, connections). Raise BackendError if impossible."""

    async def stop(self) -> None:  # noqa: B027 - optional, as start
        """Release resources. Called once, also after a failed start."""

    @abc.abstractmethod
    async def scan(self) -> Scan:
        """Every present block and the host topology."""

    @abc.abstractmethod
    async def topology(self) -> Topology:
        """A fresh topology (MemAvailable changes); cheaper than a full scan."""

    async def domain_topology(self, domain: str) -> Topology:
        """A fresh topology of ``domain``'s kernel alone: what each domain refreshes before its decisions.

        The default is ``topology().for_domain(domain)``. A backend of many domains
        overrides it, so that each domain's refresh does not build every other's.
        """
        return (await self.topology()).for_domain(domain)

    @abc.abstractmethod
    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        """Block events as they happen. Yield ``Rescan`` when events were lost.

        The iterator ends when the source is exhausted (a finished simulation);
        a real host's stream never ends.
        """

    @abc.abstractmethod
    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        """Online one block into ``zone`` and report the outcome, read back from the host.

        Never raise for an expected kernel error: map it to an ``Outcome``.
        """

    #: How many blocks one ``online_many`` call may take. 1: the phase calls ``online``
    #: per block. A backend whose calls cost a round trip (a worker thread, an RPC)
    #: raises it and overrides ``online_many`` to do a run of blocks in one.
    batch_size: int = 1

    async def online_many(self, items: Sequence[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
        """Online a run of blocks, in order; one result per item, as ``online`` would give.

        The default calls ``online`` for each. An exception fails every item of the run.
        """
        return [await self.online(block, zone) for block, zone in items]

    def census(self) -> Iterable[Block] | None:
        """Every block as the host reports it right now, synchronously (for scrape-time metrics).

        Called from the metrics server's thread; return None when not supported.
        """
        return None

    def collectors(self) -> list[Collector]:
        """Prometheus collectors of what only this backend knows (memory tiers, dax devices), read at
        scrape time from the metrics thread; the daemon registers them on its registry. Default: none."""
        return []

    def device_rows(self) -> Sequence[Any]:
        """Devices whose memory the backend brings (dax devices), one mapping or dataclass each, for
        ``hotplugd status`` (fields such as device, mode, node, size in bytes, tier); blocking, read
        only. Default: none."""
        return []

    def dropped_counts(self) -> dict[str, int]:
        """Messages the event source dropped, by reason (``malformed``, ``not_kernel``, ...)."""
        return {}

    async def conflicts(self) -> list[str]:
        """Other onliners on this host (udev rules, tools), one message each.

        The kernel's own auto-online is not one of them here: the backend reports its
        knobs (:meth:`kernel_knobs`) and the daemon's plan decides whether they conflict.
        """
        return []

    async def inventory(self) -> list[str]:
        """What this backend would manage (a hypervisor backend: its guests, their agents, the plan for
        each), one line each, printed by ``hotplugd check`` after :meth:`conflicts`. Read only. Default: none."""
        return []

    async def unknowns(self) -> list[str]:
        """What a read-only look cannot tell (a guest that does not answer), one message each.

        ``hotplugd check`` calls it after :meth:`conflicts` and exits non-zero when there is
        any: it cannot vouch for what it could not see. Default: none.
        """
        return []

    async def memory_sources(self, domain: str = HOST_DOMAIN) -> list[str]:
        """Devices whose memory hotplugd onlines besides hot-adds (``dax0.0``: what the config converts).

        The plan weighs them: the kernel's knobs are global, so a dax policy unlike the
        rest's is one hotplugd carries out itself. Default: none.
        """
        return []

    def set_device_zone(self, zone: ZoneRequest | None) -> None:  # noqa: B027 - optional: only device onliners
        """The zone ``[zones.dax]`` gives devices' memory, set once before :meth:`start` (None: its
        policy is auto-movable, decided block by block). A backend that onlines a whole device in
        one write (the sysfs backend, where the kernel has ``daxX.Y/state``) writes this zone; the
        engine still reads each block back. Default: ignored."""

    async def kernel_knobs(self, domain: str = HOST_DOMAIN) -> KernelKnobs | None:
        """The onlining knobs of ``domain``'s kernel (``auto_online_blocks``, ``online_policy``, ...).

        None (the default): this backend cannot direct the kernel's own onlining, and
        hotplugd onlines every block itself. Read-only: called by ``hotplugd check`` too.
        """
        return None

    async def set_kernel_knobs(self, values: Mapping[str, str], domain: str = HOST_DOMAIN) -> None:
        """Write ``values`` (knob name -> value as sysfs spells it) to ``domain``'s kernel, in order.

        Raise :class:`BackendError` naming the knob that could not be written. Only
        called when :meth:`kernel_knobs` said the knob exists and is writable.
        """
        raise BackendError(f"{type(self).__name__} cannot set the kernel's onlining knobs")

    async def verify(self, blocks: Sequence[Block]) -> list[Block | None]:
        """Each block as the host reports it now (``state``, ``zone``, ``valid_zones``); None: gone.

        Called after another onliner (the kernel) onlined a block, to prove where it
        went, and to watch a block the kernel holds half-online
        (:attr:`State.KERNEL_DEFERRED`). The default reads a full scan.
        """
        present = {(b.domain, b.index): b for b in (await self.scan()).blocks}
        return [present.get((b.domain, b.index)) for b in blocks]

    def describe(self) -> str:
        """One line for logs and ``hotplugd plugins``."""
        return f"{type(self).__name__}(concurrency={self.concurrency})"


#: Builds a backend from its plugin's config table (``[plugins.<name>]``).
BackendFactory = Callable[[Mapping[str, Any]], Backend]


@dataclass(frozen=True, slots=True)
class BackendSubject:
    """What a backend onlines, as ``hotplugd check``, ``status`` and ``--help`` say it.

    A plugin gives it with the backend: ``registry.add(name, factory, subject=...)``, a
    ``BackendSubject`` or a function of the backend's config table (``[plugins.<name>]``)
    returning one. The core never guesses it from a backend's name.
    """

    #: One line: what it onlines, given its table ("this host (its memory under /sys)"). "": the
    #: backend's own :meth:`Backend.describe`.
    text: str = ""
    #: The place, in "nothing else onlines memory on <where> against the plan".
    where: str = "the host"
    #: A model of a host, never this machine: ``check`` and ``status`` read no plan, devices or
    #: blocks of it (a model exists only inside a running daemon); ``run`` names it as the way to try.
    model: bool = False
    #: It reads this machine's own memory and kernel knobs: ``restore-knobs`` restores through it,
    #: and ``run``'s help names it as the way to online this host's memory.
    host: bool = False
    #: A model's line in place of ``status``'s memory table when no daemon answers ("": a generic one).
    absent: str = ""


#: A backend's subject: fixed, or a function of its config table.
SubjectOf = BackendSubject | Callable[[Mapping[str, Any]], BackendSubject]


@dataclass(frozen=True, slots=True)
class HostBackend:
    """A plugin's answer to ``hotplugd_host_backend``: whether its backend reads the machine hotplugd runs on.

    ``backend`` names it (None: not on this machine); ``reason`` says why, for the first line of
    ``check`` and ``status`` ("/sys/devices/system/memory exists, so this host's own"; when
    declining: "this machine has no /sys/devices/system/memory").
    """

    backend: str | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BackendEntry:
    name: str
    factory: BackendFactory
    plugin: str
    summary: str
    subject: SubjectOf | None = None


class BackendRegistry:
    """Where plugins register their backends: ``registry.add("name", Factory)``."""

    def __init__(self) -> None:
        self._entries: dict[str, BackendEntry] = {}
        self._plugin = "?"

    def _registering_for(self, plugin: str) -> None:
        self._plugin = plugin

    def add(self, name: str, factory: BackendFactory, *, summary: str = "", subject: SubjectOf | None = None) -> None:
        """Register ``factory`` under ``name``. Two plugins claiming one name is an error.

        ``subject`` says what the backend onlines (:class:`BackendSubject`, or a function of its
        config table returning one); without it the backend's own ``describe()`` is shown."""
        if name in self._entries:
            other = self._entries[name].plugin
            raise ConfigError(
                f"backend {name!r} is registered twice (by {other} and {self._plugin})",
                hint="disable one of the two plugins with disabled_plugins",
            )
        doc = summary or (factory.__doc__ or "").strip().splitlines()[0:1]
        self._entries[name] = BackendEntry(
            name, factory, self._plugin, doc if isinstance(doc, str) else "".join(doc), subject
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[BackendEntry]:
        return [self._entries[n] for n in self.names()]

    def subject(self, name: str, options: Mapping[str, Any] | None = None) -> BackendSubject:
        """What backend ``name`` onlines under its table ``options``; an unknown name, or a backend
        registered without one, gets the generic :class:`BackendSubject`. A plugin's function that
        raises is reported by the plugin's name (exit 78), as a factory refusing its options."""
        entry = self._entries.get(name)
        if entry is None or entry.subject is None:
            return BackendSubject()
        if isinstance(entry.subject, BackendSubject):
            return entry.subject
        try:
            subject = entry.subject(options or {})
        except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name without a traceback
            raise PluginError(f"backend {name!r} (plugin {entry.plugin!r}) cannot say what it onlines: "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(subject, BackendSubject):
            raise PluginError(f"backend {name!r} (plugin {entry.plugin!r}) said what it onlines with "
                              f"{subject!r}, not a BackendSubject")
        return subject

    def choices(self) -> list[str]:
        """The backends to name where one must be chosen: those reading this host, then the models."""
        subjects = {name: self.subject(name) for name in self.names()}
        return [n for n, s in subjects.items() if s.host] + [n for n, s in subjects.items() if s.model and not s.host]

    def build(self, name: str, options: Mapping[str, Any]) -> Backend:
        """Build backend ``name``; an unknown name lists the installed ones."""
        try:
            entry = self._entries[name]
        except KeyError:
            installed = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"unknown backend {name!r}; installed backends: {installed}",
                hint="set `backend` in the config or pass --backend",
            ) from None
        try:
            return entry.factory(options)
        except HotplugdError:
            raise
        except ValueError as exc:  # a factory's own validation of its options
            raise ConfigError(f"backend {name!r} refused its options [plugins.{name}]: {exc}") from None
        except ImportError as exc:  # the backend's own dependencies, imported when it is built
            raise PluginError(f"backend {name!r} (plugin {entry.plugin!r}) cannot be imported: "
                              f"{type(exc).__name__}: {exc}",
                              hint=f"fix the plugin's dependencies, or choose another backend than {name!r}") from None
        except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name without a traceback
            raise BackendError(f"backend {name!r} (plugin {entry.plugin!r}) failed to start: "
                               f"{type(exc).__name__}: {exc}") from None
