"""Fixtures for the real-kernel tests: QEMU guests booted once per session.

- ``guest``: ``memhp_default_state=offline``, a virtio-mem device ``vm0`` of 16 GiB max,
  8 DIMM slots, ``-m 2G,slots=8,maxmem=64G``.
- ``autoonline_guest``: the same with ``memhp_default_state=online`` (the kernel onlines).
- ``boot_guest``: a factory, ``boot_guest(GuestConfig(...)) -> Guest``, for a fresh guest of
  one's own, closed at the end of the test.

Both session guests are shared by every test: blocks accumulate, so never assume block numbers
(``before = {b.index for b in guest.agent.memory_blocks()}`` then ``exclude=before``).
Without QEMU or the kernel the tests skip ("run scripts/provision-vm to enable"); with
``CI=true`` they fail instead, since CI provisions (``vm_assets`` and the rest of that rule live in
:mod:`harness.pytest_plugin`, registered by ``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from harness import Assets, GiB, Guest, GuestConfig
from harness.pytest_plugin import boot, guest_fixture

VM_MARKER = "vm: runs a real Linux kernel under QEMU (scripts/provision-vm)"

GUEST_CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                           virtio_mem=True, virtio_mem_max=16 * GiB)
AUTOONLINE_CONFIG = GuestConfig(memhp_default_state="online", memory="2G", slots=8, maxmem="64G",
                                virtio_mem=True, virtio_mem_max=16 * GiB)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", VM_MARKER)


guest = guest_fixture(GUEST_CONFIG, scope="session", doc=(
    "The session's guest booted with ``memhp_default_state=offline`` (hot-added blocks stay offline)."))
autoonline_guest = guest_fixture(AUTOONLINE_CONFIG, scope="session", doc=(
    "The session's guest booted with ``memhp_default_state=online`` (the kernel onlines)."))


@pytest.fixture
def boot_guest(vm_assets: Assets) -> Iterator[Callable[[GuestConfig], Guest]]:
    """A factory of fresh guests (about 8 s each), all closed when the test ends."""
    guests: list[Guest] = []

    def boot_one(config: GuestConfig = GUEST_CONFIG) -> Guest:
        guests.append(boot(config, vm_assets))
        return guests[-1]

    yield boot_one
    for g in guests:
        g.close()
