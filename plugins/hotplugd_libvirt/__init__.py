"""hotplugd's ``libvirt`` backend: online guests' hot-added memory on hosts where libvirt owns the guests.

hotplugd runs on the host beside libvirtd, and onlines the memory hot-added
into the running domains the config selects through each guest's
qemu-guest-agent, reached through libvirt's own agent channel
(``qemuAgentCommand``: ``guest-get-memory-blocks``, ``guest-set-memory-blocks``).
It follows libvirt's events: domains that start, stop or migrate away
(lifecycle), the agent connecting (a listing of the guest's blocks: coldplug),
memory arriving (DEVICE_ADDED for a DIMM, MEMORY_DEVICE_SIZE_CHANGE for
virtio-mem: the guest is polled fast while memory is being added). It
reconnects with backoff when libvirtd restarts, and then reads every domain
again. Each selected domain is a *domain* of the core, named by the domain's
name, with its own queue and phases; the guest-agent protocol (requests, reply
bounds, false-success detection, batching, backoff) is the ``qga`` backend's,
shared in :mod:`hotplugd_guestagent`. docs/libvirt.md has the design, the
privileges it needs and the ``custom-ga-command`` taint.

The ``[plugins.libvirt]`` table:

- ``uri`` (default ``"qemu:///system"``): libvirt's connection URI.
- ``domains``: names or glob patterns of the domains to manage (``["*"]``: all);
- ``metadata``: a namespace URI; a running domain whose ``<metadata>`` has an
  element in it is managed unless the element's text is ``no``/``off``/``false``/``0``
  (``domains`` or ``metadata`` is needed with ``backend = "libvirt"``);
- ``exclude``: names or globs never managed, whatever selects them.
- ``concurrency`` (default 1), ``parallel_domains`` (default 0: all): blocks one
  guest's kernel onlines at once, and guests running a final phase at once.
- ``poll_interval`` (5 s), ``resize_poll_interval`` (100 ms), ``resize_quiet`` (1.5 s):
  the fallback poll of each guest's block list, the poll while memory is being added,
  and how long without a new block or event ends that; ``add_wait`` (30 s): after a memory
  device is added (or virtio-mem grows), the fast poll waits this long at most for its first
  block (the guest creates them seconds later on a loaded host).
- ``timeout`` (5 s, at least 1: libvirt takes whole seconds) for one agent request,
  plus ``online_timeout_per_block`` (100 ms) per block of a ``guest-set-memory-blocks``.
- ``reconnect_interval`` (1 s) doubled up to ``reconnect_max`` (30 s): how long an
  agent, or libvirtd, that failed is left alone.
- ``discover_interval`` (30 s): the domain list read again besides the events.
- ``max_batch`` (256), ``verify`` (false): as the ``qga`` backend's.
- ``max_threads`` (64): libvirt calls in flight at once (each blocks a worker thread;
  a domain has at most one agent request in flight).

libvirt-python is imported only when this backend is built: without it,
``--backend libvirt`` is a configuration error (exit 78) and every other backend works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hotplugd import BackendRegistry, BackendSubject, Config, ConfigError, ConfigProblem, hookimpl

from .settings import Settings, parse

if TYPE_CHECKING:
    from .backend import LibvirtBackend

__all__ = ["LibvirtBackend", "Settings", "parse"]

INSTALL_HINT = ("install the binding: pip install 'hotplugd[libvirt]' (it builds against libvirt's headers: "
                "apt-get install libvirt-dev pkg-config), or use a Python with Debian's python3-libvirt")


def __getattr__(name: str) -> Any:
    if name == "LibvirtBackend":
        from .backend import LibvirtBackend

        return LibvirtBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build(options: Mapping[str, Any]) -> LibvirtBackend:
    """The backend, with libvirt-python imported now: a host that does not choose it never needs it."""
    settings = parse(options)
    try:
        from .libvirt_api import LibvirtHypervisor
    except ImportError as exc:
        raise ConfigError(f"backend \"libvirt\" needs libvirt-python, which cannot be imported ({exc})",
                          hint=INSTALL_HINT) from None
    from .backend import LibvirtBackend

    return LibvirtBackend(settings, LibvirtHypervisor())


@hookimpl
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    registry.add("libvirt", _build, summary="guests onlined through libvirt's events and guest agent channel",
                 subject=BackendSubject("the guests' memory, through libvirt and their qemu-guest-agent",
                                        "the guests"))


@hookimpl
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if "libvirt" in plugins or config.backend == "libvirt":
        parse(plugins.get("libvirt", {}), problems, require_selection=config.backend == "libvirt")
    return problems

