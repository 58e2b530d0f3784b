"""Writing a hotplugd plugin: the quickstart.

A plugin is a Python package that hotplugd finds through the ``hotplugd`` entry-point group, exactly as it
finds its own built-in backends (``sysfs``, ``simulated``, ``qga``, ``libvirt``). A plugin can add a
**backend** (what reads a host's memory blocks and onlines them), choose each block's **zone**, **observe**
phases and block outcomes, export **Prometheus metrics**, contribute **subcommands**, say what it
**installs** beside the units (``hotplugd install-files``), and take a **config table** of its own,
``[plugins.<name>]``, validated at start. A backend says what it onlines (``subject=``, a
:class:`hotplugd.BackendSubject`) and whether it reads the machine hotplugd runs on
(``hotplugd_host_backend``): the core names no backend.

The entry point's name is the plugin's name (``hotplugd plugins``, ``disabled_plugins``, the config table);
its value is the module holding the hooks::

    # pyproject.toml
    [project.entry-points.hotplugd]
    hello = "hotplugd_hello.plugin"

Hooks are plain synchronous functions marked with :data:`hotplugd.hookimpl`, named exactly like a hook of
:mod:`hotplugd.plugin.spec` (which documents each one: arguments, when it is called, what it may return);
an implementation may take fewer arguments than the hook offers. Import only what ``hotplugd.__all__``
exports (and the kit :mod:`hotplugd.testing`): the rest of hotplugd is internal. A minimal plugin with a
backend and a validated table::

    # hotplugd_hello/plugin.py
    from dataclasses import dataclass

    from hotplugd import BackendRegistry, ConfigProblem, hookimpl, read_table, setting, whole

    from .backend import HelloBackend  # a hotplugd.Backend: scan, topology, events, online


    @dataclass(frozen=True)
    class Settings:
        blocks: int = setting(4, whole(0, 1 << 20), "offline blocks at start")


    @hookimpl
    def hotplugd_register_backends(registry: BackendRegistry) -> None:
        registry.add("hello", lambda table: HelloBackend(read_table(Settings, table, "plugins.hello").blocks),
                     summary="a toy host with offline blocks")


    @hookimpl
    def hotplugd_check_config(plugins) -> list[ConfigProblem]:
        problems: list[ConfigProblem] = []
        read_table(Settings, plugins.get("hello", {}), "plugins.hello", problems)
        return problems

``hotplugd run --backend hello --set plugins.hello.blocks=8`` then runs the real daemon on it. Test it with
the fixtures of :mod:`hotplugd.testing` (``pytest -p hotplugd.testing.pytest_plugin``: ``make_daemon``,
``hook_recorder``, the manual clock).

Where to read on: ``docs/plugins.md`` (the quickstart as files that are tested as written, the backend
contract, isolation of a failing plugin, every hook, validating a table, testing), :mod:`hotplugd.plugin.spec`
(the hooks), :class:`hotplugd.Backend` (the backend contract), and ``examples/hotplugd-example-backend``
(a complete third-party plugin, installed with pip into a fresh virtualenv by its test).

This package is hotplugd's side of it: ``spec`` (the hook specifications), ``manager`` (loading by entry
point, ``disabled_plugins``), ``hooks`` (calling them, a failing plugin isolated), ``backend`` (the Backend
contract and registry), ``commands`` (contributed subcommands), ``installing`` (what plugins install),
``validation`` and ``builtin``.
"""
