"""The Debian 13 guest the installed-unit tests share: the clean root :mod:`harness.debroot` made, booted
with systemd as PID 1, with hotplugd's packages (built in that root from this checkout) either in its share,
installed by :func:`apt_install` as a user installs them, or already installed by apt before the boot
(``installed=True``: :func:`harness.debroot.installed`, the units enabled as the package enables them).

Used by ``test_deb_guest.py`` (the package's life: install, kill, purge), ``test_deb_boot.py`` (memory
plugged at boot) and ``test_systemd.py`` (the unit's behaviour: READY, the socket, the watchdog, reload,
stop, a config error, exposure), so that the guest scenarios where the unit matters run hotplugd as
installed, never from the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import Assets, GuestConfig, debroot
from harness.errors import NotProvisioned
from harness.pytest_plugin import provisioned
from harness.systemd_guest import SystemdGuest, find_systemd_assets

REPO = Path(__file__).resolve().parents[2]
METRICS_URL = "http://127.0.0.1:10964/metrics"


def built() -> tuple[Path, Path]:
    """The root and the directory of the built ``.deb`` files (made when missing or stale)."""
    if shutil.which("debootstrap") is None:
        raise NotProvisioned("debootstrap is not installed: run scripts/provision-deb")
    return debroot.ensure_root(REPO), debroot.build(REPO)


def installed_root() -> Path:
    """The root with the packages installed (made when missing or stale)."""
    if shutil.which("debootstrap") is None:
        raise NotProvisioned("debootstrap is not installed: run scripts/provision-deb")
    return debroot.installed(REPO)


def debian_guest(vm_assets: Assets, config: GuestConfig, *, installed: bool = False) -> SystemdGuest:
    """The guest on the Debian 13 root, not started: with the packages in its share, or (``installed``)
    already installed in its root. Skips the test, or fails it in CI, when the tools are not provisioned."""
    assets = provisioned(find_systemd_assets, vm_assets)
    if installed:
        return SystemdGuest(config, assets, root=provisioned(installed_root))
    root, out = provisioned(built)
    guest = SystemdGuest(config, assets, root=root)
    guest.share.mkdir(parents=True, exist_ok=True)
    for deb_file in out.glob("*.deb"):
        shutil.copy(deb_file, guest.share / deb_file.name)
    return guest


@contextmanager
def running(guest: SystemdGuest, times: dict[str, float], label: str) -> Iterator[SystemdGuest]:
    """``guest`` booted to ``running`` (its time in ``times``), closed at the end, the timings printed."""
    t0 = time.monotonic()
    try:
        guest.start()
        times["boot to running"] = time.monotonic() - t0
        yield guest
    finally:
        guest.close()
        print(f"\n{label} timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))


def metrics_text(guest: SystemdGuest) -> str:
    """The daemon's metrics, scraped in the guest through ``hotplugd.socket``."""
    return guest.agent.run(["python3", "-c", f"import urllib.request; print(urllib.request.urlopen("
                                             f"{METRICS_URL!r}, timeout=30).read().decode())"], timeout=90).stdout


def apt_install(guest: SystemdGuest) -> subprocess.CompletedProcess[str]:
    """``apt-get install ./hotplugd_*.deb ./python3-hotplugd_*.deb`` in the guest (no network there: the
    dependencies are Debian's, already in the root); unchecked, the caller judges."""
    debs = sorted(f"{guest.guest_share}/{p.name}" for p in guest.share.glob("*.deb"))
    return guest.agent.run(["apt-get", "install", "-y", "--no-install-recommends", *debs], timeout=600, check=False,
                           env={"DEBIAN_FRONTEND": "noninteractive"})
