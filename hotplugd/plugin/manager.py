"""The plugin manager: entry-point loading, blocking, validation and isolated hook calls.

Built-in plugins (``plugins/`` in the source tree) load through the ``hotplugd``
entry-point group exactly like third-party ones; nothing here names them.

One broken plugin never stops the others: an entry-point plugin that fails to
import, to register, or to register its backends is logged, kept in
:attr:`PluginManager.failures` (``hotplugd plugins`` shows it, a metric counts it)
and left out. It is fatal only when the config chooses a backend it would
have provided (:func:`build_backend`). A plugin registered directly (``extra``:
tests, embedding) still raises: its caller wrote it.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pluggy
import structlog

from hotplugd.config import Config
from hotplugd.errors import ConfigError, HotplugdError, PluginError
from hotplugd.model import ZoneRequest
from hotplugd.plugin import builtin
from hotplugd.plugin import spec as hookspecs
from hotplugd.plugin.backend import Backend, BackendRegistry

ENTRY_POINT_GROUP = "hotplugd"
#: The name the core's own implementations are registered under (:mod:`hotplugd.plugin.builtin`).
BUILTIN = "hotplugd.builtin"
DISABLE_ENV = "HOTPLUGD_DISABLED_PLUGINS"
_BLOCK_HINT = "fix or uninstall it, or block it with " + DISABLE_ENV + "={name}"

log = structlog.get_logger(__name__)


def blocked_names(disabled: Iterable[str] = (), environ: dict[str, str] | None = None) -> set[str]:
    """Plugins blocked by the config's ``disabled_plugins`` and ``HOTPLUGD_DISABLED_PLUGINS`` (comma-separated)."""
    env = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return {n.strip() for n in [*disabled, *env.split(",")] if n.strip()}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering where each entry-point plugin came from and which failed."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.versions: dict[str, str] = {}
        #: Entry-point plugins left out, by name: the error, with its hint.
        self.failures: dict[str, PluginError] = {}
        self._entry_points: set[str] = set()

    def fail(self, name: str, error: PluginError) -> None:
        """Leave plugin ``name`` out (unregistered, blocked) and remember why."""
        self.failures.setdefault(name, error)
        if self.get_plugin(name) is not None:
            self.unregister(name=name)
        self.set_blocked(name)
        log.error("plugin_failed", plugin=name, error=error.args[0], hint=error.hint)

    def isolates(self, name: str) -> bool:
        """Whether a failure of plugin ``name`` leaves it out (an entry point) rather than raises."""
        return name in self._entry_points


def make_manager(
    disabled: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    extra: Iterable[tuple[str, object]] = (),
    environ: dict[str, str] | None = None,
) -> PluginManager:
    """A fresh plugin manager: hookspecs, the core's own implementations, then entry points.

    ``extra`` registers (name, plugin) pairs directly (tests, embedding). An
    entry point names a module, an object, or a class (instantiated without
    arguments, once per manager).
    Blocked plugins (``disabled`` and ``HOTPLUGD_DISABLED_PLUGINS``) are never
    imported. A plugin that fails to import, or implements a hook that does
    not exist (or as ``async def``, or as a wrapper), is a PluginError naming it:
    an entry point's is kept in ``pm.failures`` and the plugin left out; an
    ``extra`` plugin's is raised.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name=BUILTIN)
    blocked = blocked_names(disabled, environ)
    for name in blocked:
        pm.set_blocked(name)
    if load_entry_points:
        _load_entry_points(pm, blocked)
    for name, plugin in extra:
        if name not in blocked:
            _register(pm, plugin, name)
    check_hooks(pm)
    return pm


def _describe(pm: PluginManager, name: str) -> str:
    """``'name' (module, distribution version)`` for error messages."""
    plugin = pm.get_plugin(name)
    where = [getattr(plugin, "__name__", type(plugin).__name__)]
    if name in pm.versions:
        where.append(pm.versions[name])
    return f"{name!r} ({', '.join(where)})"


def _register(pm: PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # an implementation's arguments are not in its spec
        error = PluginError(f"plugin {name!r} is invalid: {exc}", hint=_BLOCK_HINT.format(name=name))
        if not pm.isolates(name):
            raise error from None
        pm.fail(name, error)


def hook_names() -> list[str]:
    """Every hook hotplugd defines (the specs in :mod:`hotplugd.plugin.spec`)."""
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("hotplugd_") and hasattr(f, marker))


def check_hooks(pm: PluginManager) -> None:
    """Refuse, by plugin name, an implementation hotplugd would never call as its author meant.

    A misspelled (unknown) hook, an ``async def`` implementation (its coroutine
    would count as a result and never run), and a wrapper (hotplugd calls each
    implementation on its own, so the wrapper would never resume).
    """
    specs = hook_names()
    failed: list[tuple[str, PluginError]] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        for caller in pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                problem, hint = _impl_problem(caller, impl, specs)
                if problem:
                    error = PluginError(f"plugin {_describe(pm, name)} {problem}",
                                        hint=hint or _BLOCK_HINT.format(name=name))
                    if not pm.isolates(name):
                        raise error
                    failed.append((name, error))
    for name, error in failed:
        pm.fail(name, error)


def _impl_problem(caller: pluggy.HookCaller, impl: pluggy.HookImpl, specs: list[str]) -> tuple[str, str]:
    if not caller.has_spec() and not impl.optionalhook:
        close = difflib.get_close_matches(caller.name, specs, n=1)
        hint = f"did you mean {close[0]}?" if close else "the hooks are listed in docs/plugins.md"
        return f"implements an unknown hook {caller.name!r}", hint
    if inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function):
        return (f"implements {caller.name!r} with `async def`; hooks are synchronous",
                "define it with plain `def` and return quickly; async work belongs in a backend")
    if impl.wrapper or impl.hookwrapper:
        return (f"implements {caller.name!r} as a wrapper; hotplugd calls each implementation on its own",
                "implement the hook as a plain function")
    return "", ""


def _load_entry_points(pm: PluginManager, blocked: set[str]) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        pm._entry_points.add(ep.name)
        try:
            plugin = ep.load()
            if inspect.isclass(plugin):  # a class: one fresh instance per manager, so state lives per daemon
                plugin = plugin()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported by name
            pm.fail(ep.name, PluginError(
                f"plugin {ep.name!r} (entry point {ep.value!r}, group {ENTRY_POINT_GROUP!r}) failed to load: "
                f"{type(exc).__name__}: {exc}",
                hint=_BLOCK_HINT.format(name=ep.name),
            ))
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None:
            pm.versions[ep.name] = f"{dist.name} {dist.version}"
        _register(pm, plugin, ep.name)


def _each(caller: pluggy.HookCaller, kwargs: dict[str, Any], *, isolate: bool,
          before: Callable[[Any], None] | None = None,
          failed: Callable[[str, PluginError], None] | None = None) -> Iterator[tuple[Any, Any]]:
    """(implementation, result) for each implementation, in pluggy's call order.

    An implementation that raises is logged with its plugin and skipped when
    ``isolate``; otherwise it becomes a PluginError naming the plugin (start-up hooks),
    handed to ``failed(plugin, error)`` when given, else raised. ``before(impl)``
    runs ahead of each call.
    """
    for impl in reversed(caller.get_hookimpls()):
        if before is not None:
            before(impl)
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except HotplugdError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported by its name
            if isolate:
                log.exception("hook_failed", hook=caller.name, plugin=impl.plugin_name)
                continue
            error = PluginError(f"plugin {impl.plugin_name!r} failed in {caller.name}: {type(exc).__name__}: {exc}",
                                hint=_BLOCK_HINT.format(name=impl.plugin_name))
            if failed is None:
                raise error from None
            failed(impl.plugin_name, error)
            continue
        yield impl, result


def backend_registry(pm: PluginManager) -> BackendRegistry:
    """Ask every plugin for its backends, remembering which plugin registered which.

    An entry-point plugin that raises is left out (:meth:`PluginManager.fail`); its
    backends are missing, which matters only to a config that chooses one of them.
    """
    registry = BackendRegistry()
    failures: list[tuple[str, PluginError]] = []

    def failed(name: str, error: PluginError) -> None:
        if not pm.isolates(name):
            raise error
        failures.append((name, error))

    for _ in _each(pm.hook.hotplugd_register_backends, {"registry": registry}, isolate=False,
                   before=lambda impl: registry._registering_for(impl.plugin_name), failed=failed):
        pass
    for name, error in failures:
        pm.fail(name, error)
    return registry


#: ``run`` with no backend chosen: hotplugd never guesses whether to change this host's memory.
NO_BACKEND = "no backend chosen (`--backend NAME`, or backend = \"NAME\" in the config)"
NO_BACKEND_HINT = "`hotplugd check` shows what hotplugd would do on this host, without changing it"
#: The zone a whole device is onlined into, by ``[zones.dax]`` policy (auto-movable: decided per block).
DEVICE_ZONES = {"movable": ZoneRequest.MOVABLE, "kernel": ZoneRequest.KERNEL, "auto": ZoneRequest.AUTO}


def build_backend(pm: PluginManager, config: Config) -> Backend:
    """The backend the config chooses. Unknown, it names the plugins that failed: one of
    them may be the one that provides it (exit 78, as for any config error)."""
    if not config.backend:
        choices = "; ".join(f"`--backend {e.name}`" + (f": {e.summary}" if e.summary else "")
                            for e in backend_registry(pm).entries())
        raise ConfigError(f"{NO_BACKEND}: {choices or 'none is installed'}", hint=NO_BACKEND_HINT)
    registry = backend_registry(pm)
    if config.backend not in registry.names() and pm.failures:
        failures = "; ".join(error.args[0] for error in pm.failures.values())
        raise PluginError(f"backend {config.backend!r} is not available: {failures}",
                          hint=next(iter(pm.failures.values())).hint)
    backend = registry.build(config.backend, config.plugins.get(config.backend, {}))
    backend.set_device_zone(DEVICE_ZONES.get(config.zones.dax.policy))
    return backend


def call_isolated(caller: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call each implementation on its own; one that raises is logged with its plugin and skipped."""
    return [result for _impl, result in _each(caller, kwargs, isolate=True) if result is not None]


def first_result_isolated(caller: pluggy.HookCaller, expect: type | None = None, **kwargs: Any) -> Any:
    """Like a firstresult call, but an implementation that raises, or returns something
    other than an ``expect`` instance, is logged with its plugin and skipped."""
    for impl, result in _each(caller, kwargs, isolate=True):
        if result is None:
            continue
        if expect is not None and not isinstance(result, expect):
            log.error("hook_bad_result", hook=caller.name, plugin=impl.plugin_name,
                      result=repr(result)[:80], expected=expect.__name__)
            continue
        return result
    return None


def each_checked(caller: pluggy.HookCaller, **kwargs: Any) -> list[tuple[Any, Any]]:
    """(implementation, result) of each implementation; one that raises becomes a PluginError naming it."""
    return list(_each(caller, kwargs, isolate=False))


def call_one(impl: Any, hook: str, kwargs: dict[str, Any], *, isolate: bool) -> Any:
    """Call one implementation with its own arguments; one that raises is logged and skipped when
    ``isolate``, else a PluginError naming its plugin."""
    try:
        return impl.function(*[kwargs[a] for a in impl.argnames])
    except HotplugdError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported by its name
        if isolate:
            log.exception("hook_failed", hook=hook, plugin=impl.plugin_name)
            return None
        raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}",
                          hint=_BLOCK_HINT.format(name=impl.plugin_name)) from None


def call_checked(caller: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call each implementation; one that raises becomes a PluginError naming its plugin (start-up hooks)."""
    return [result for _impl, result in _each(caller, kwargs, isolate=False) if result is not None]


def describe_plugins(pm: PluginManager) -> list[dict[str, Any]]:
    """Name, version, hooks and module of every registered plugin (for ``hotplugd plugins``)."""
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        if plugin is None:
            if name in pm.failures:
                rows.append({"name": name, "version": "FAILED", "module": pm.failures[name].args[0], "hooks": []})
            continue
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        rows.append({
            "name": name,
            "version": pm.versions.get(name, "built-in"),
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "hooks": hooks,
        })
    return rows
