"""Fixtures for the real-kernel tests: QEMU guests booted once per session.

- ``guest``: ``memhp_default_state=offline``, a virtio-mem device ``vm0`` of 16 GiB max,
  8 DIMM slots, ``-m 2G,slots=8,maxmem=64G``.
- ``autoonline_guest``: the same with ``memhp_default_state=online`` (the kernel onlines).
- ``boot_guest``: a factory, ``boot_guest(GuestConfig(...)) -> Guest``, for a fresh guest of
  one's own, closed at the end of the test.

Both session guests are shared by every test: blocks accumulate, so never assume block numbers
(``before = {b.index for b in guest.agent.memory_blocks()}`` then ``exclude=before``).
Without QEMU or the kernel the tests skip ("run scripts/provision-vm to enable"); with
``CI=true`` they fail instead, since CI provisions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Make ``harness`` importable whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from harness import Assets, GiB, Guest, GuestConfig, NotProvisioned, find_assets  # noqa: E402

VM_MARKER = "vm: runs a real Linux kernel under QEMU (scripts/provision-vm)"

GUEST_CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                           virtio_mem=True, virtio_mem_max=16 * GiB)
AUTOONLINE_CONFIG = GuestConfig(memhp_default_state="online", memory="2G", slots=8, maxmem="64G",
                                virtio_mem=True, virtio_mem_max=16 * GiB)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", VM_MARKER)


@pytest.fixture(scope="session")
def vm_assets() -> Assets:
    """QEMU, kernel and initramfs; skips (fails under ``CI=true``) when not provisioned."""
    try:
        return find_assets()
    except NotProvisioned as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true: CI must provision the VM)", pytrace=False)
        pytest.skip(str(exc))


def _boot(config: GuestConfig, assets: Assets) -> Guest:
    guest = Guest(config, assets).start()
    print(f"\n{guest!r} booted in {guest.boot_seconds:.1f} s")
    return guest


@pytest.fixture(scope="session")
def guest(vm_assets: Assets) -> Iterator[Guest]:
    """The session's guest booted with ``memhp_default_state=offline`` (hot-added blocks stay offline)."""
    g = _boot(GUEST_CONFIG, vm_assets)
    yield g
    g.close()


@pytest.fixture(scope="session")
def autoonline_guest(vm_assets: Assets) -> Iterator[Guest]:
    """The session's guest booted with ``memhp_default_state=online`` (the kernel onlines)."""
    g = _boot(AUTOONLINE_CONFIG, vm_assets)
    yield g
    g.close()


@pytest.fixture
def boot_guest(vm_assets: Assets) -> Iterator[Callable[[GuestConfig], Guest]]:
    """A factory of fresh guests (about 8 s each), all closed when the test ends."""
    guests: list[Guest] = []

    def boot(config: GuestConfig = GUEST_CONFIG) -> Guest:
        guests.append(_boot(config, vm_assets))
        return guests[-1]

    yield boot
    for g in guests:
        g.close()
