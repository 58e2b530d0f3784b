"""The Debian 13 guest the installed-unit tests share: the clean root :mod:`harness.debroot` made, booted
with systemd as PID 1, hotplugd's packages (built in that root from this checkout) in its share, installed
by :func:`apt_install` as a user installs them.

Used by ``test_deb_guest.py`` (the package's life: install, kill, purge) and ``test_systemd.py`` (the
unit's behaviour: READY, the socket, the watchdog, reload, stop, a config error, exposure), so that the
guest scenarios where the unit matters run hotplugd as installed, never from the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness import Assets, GuestConfig, debroot
from harness.errors import NotProvisioned
from harness.pytest_plugin import provisioned
from harness.systemd_guest import SystemdGuest, find_systemd_assets

REPO = Path(__file__).resolve().parents[2]


def built() -> tuple[Path, Path]:
    """The root and the directory of the built ``.deb`` files (made when missing or stale)."""
    if shutil.which("debootstrap") is None:
        raise NotProvisioned("debootstrap is not installed: run scripts/provision-deb")
    return debroot.ensure_root(REPO), debroot.build(REPO)


def debian_guest(vm_assets: Assets, config: GuestConfig) -> SystemdGuest:
    """The guest on the Debian 13 root, not started, with the packages in its share (skips the test,
    or fails it in CI, when the tools are not provisioned)."""
    assets = provisioned(find_systemd_assets, vm_assets)
    root, out = provisioned(built)
    guest = SystemdGuest(config, assets, root=root)
    guest.share.mkdir(parents=True, exist_ok=True)
    for deb_file in out.glob("*.deb"):
        shutil.copy(deb_file, guest.share / deb_file.name)
    return guest


def apt_install(guest: SystemdGuest) -> subprocess.CompletedProcess[str]:
    """``apt-get install ./hotplugd_*.deb ./python3-hotplugd_*.deb`` in the guest (no network there: the
    dependencies are Debian's, already in the root); unchecked, the caller judges."""
    debs = sorted(f"{guest.guest_share}/{p.name}" for p in guest.share.glob("*.deb"))
    return guest.agent.run(["apt-get", "install", "-y", "--no-install-recommends", *debs], timeout=600, check=False,
                           env={"DEBIAN_FRONTEND": "noninteractive"})
