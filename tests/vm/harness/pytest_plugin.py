"""The harness's pytest side: "skip, or fail under ``CI=true``" when something is not provisioned, and guests.

Registered for every test directory by ``tests/conftest.py`` (``pytest_plugins``), so the
``vm_assets`` fixture is there wherever a test asks for it. The rest is imported::

    from harness.pytest_plugin import guest_fixture, provisioned, require

    guest = guest_fixture(GuestConfig(...))           # a module-scoped guest of this module's own
    assets = provisioned(find_systemd_assets, base)   # NotProvisioned -> skip (fail under CI=true)
    require(Path("/usr/sbin/qemu-ga"), "/usr/sbin/qemu-ga missing: ...")

Without what a test needs it is skipped with a message naming what is missing and how to get it;
with ``CI=true`` it fails instead, since CI provisions everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NoReturn, ParamSpec, TypeVar

import pytest

from .assets import Assets, find_assets
from .errors import NotProvisioned
from .guest import Guest, GuestConfig

P = ParamSpec("P")
T = TypeVar("T")

#: Why a missing VM ingredient fails under ``CI=true`` rather than skips.
CI_PROVISIONS = "CI must provision the VM"


def unavailable(message: str, ci_reason: str = CI_PROVISIONS) -> NoReturn:
    """Skip the running test with ``message``; under ``CI=true`` fail it, ``ci_reason`` added."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: {ci_reason})", pytrace=False)
    pytest.skip(message)


def require(condition: bool | Path, message: str, ci_reason: str = CI_PROVISIONS) -> None:
    """Return if ``condition`` holds (a path: if it exists); else :func:`unavailable`."""
    if not (condition.exists() if isinstance(condition, Path) else condition):
        unavailable(message, ci_reason)


def provisioned(find: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``find(*args, **kwargs)``; its :class:`NotProvisioned` becomes :func:`unavailable` with its message."""
    try:
        return find(*args, **kwargs)
    except NotProvisioned as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def vm_assets() -> Assets:
    """QEMU, kernel and initramfs; skips (fails under ``CI=true``) when not provisioned."""
    return provisioned(find_assets)


def boot(config: GuestConfig, assets: Assets) -> Guest:
    """A guest started from ``config``, its boot time printed (``pytest -s``)."""
    guest = Guest(config, assets).start()
    print(f"\n{guest!r} booted in {guest.boot_seconds:.1f} s")
    return guest


def guest_fixture(config: GuestConfig, *, scope: Literal["module", "session"] = "module",
                  doc: str = "A guest of this module's own, booted once for its tests.") -> Any:
    """A fixture (assign it to the fixture's name) yielding a guest booted from ``config`` once per
    ``scope``, closed at its end; it needs ``vm_assets``, so it skips like it."""

    def fixture(vm_assets: Assets) -> Iterator[Guest]:
        guest = boot(config, vm_assets)
        yield guest
        guest.close()

    fixture.__doc__ = doc
    return pytest.fixture(scope=scope)(fixture)
