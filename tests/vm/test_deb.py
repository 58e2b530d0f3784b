"""hotplugd's Debian packages, built in a clean Debian 13 root (scripts/provision-deb): what they hold, lintian.

The build itself (debootstrap, build dependencies, ``dpkg-buildpackage``, the package's own tests at
build, ``lintian``) is :mod:`harness.debroot`'s, cached in ``.vm/trixie``; these checks read its output.
The packages installed and run under their own unit in a guest: tests/vm/test_deb_guest.py.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import debroot
from harness.errors import NotProvisioned
from harness.pytest_plugin import provisioned

REPO = Path(__file__).resolve().parents[2]


def built() -> Path:
    if shutil.which("debootstrap") is None or shutil.which("dpkg-deb") is None:
        raise NotProvisioned("debootstrap is not installed: run scripts/provision-deb")
    return debroot.build(REPO)


@pytest.fixture(scope="module")
def out() -> Path:
    return provisioned(built)


def unpack(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(dest / "DEBIAN")], check=True)
    return dest


@pytest.fixture(scope="module")
def daemon(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(out / "hotplugd_0.1.0_all.deb", tmp_path_factory.mktemp("hotplugd"))


@pytest.fixture(scope="module")
def library(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(out / "python3-hotplugd_0.1.0_all.deb", tmp_path_factory.mktemp("python3-hotplugd"))


def test_the_package_tests_passed_at_build(out: Path) -> None:
    """On Debian 13's libraries (anyio 4.8, pluggy 1.5, structlog 25.3, pytest 8.3...): debian/rules' subset."""
    failed = out / "build-tests-failed.log"
    assert not failed.exists(), "\n".join(line for line in failed.read_text().splitlines()
                                          if line.startswith(("FAILED", "ERROR", "E  ", "=")))[-6000:]
    assert re.search(r"=+ \d+ passed", (out / "build.log").read_text())


def test_lintian_reports_no_error_and_no_warning(out: Path) -> None:
    report = (out / "lintian.txt").read_text()
    assert not [line for line in report.splitlines() if line.startswith(("E:", "W:"))], report


def test_the_unit_and_socket_are_the_repositorys_installed_by_debhelper(daemon: Path) -> None:
    for name in ("hotplugd.service", "hotplugd.socket"):
        assert (daemon / "usr/lib/systemd/system" / name).read_text() == (REPO / "systemd" / name).read_text()
    postinst = (daemon / "DEBIAN/postinst").read_text()
    assert "deb-systemd-helper" in postinst and "hotplugd.socket" in postinst


def test_the_config_is_a_conffile_for_the_real_host(daemon: Path) -> None:
    assert (daemon / "DEBIAN/conffiles").read_text().split() == ["/etc/hotplugd/hotplugd.toml"]
    config = (daemon / "etc/hotplugd/hotplugd.toml").read_text()
    reference = (REPO / "config/hotplugd.toml").read_text()
    expected = re.sub(r'^backend = "[^"]*"$', 'backend = "sysfs"', reference, count=1, flags=re.M)
    commented = "\n# [plugins.qga]                 # (not in the Debian package: it needs qemu.qmp)\n"
    expected = expected.replace("\n[plugins.qga]\n", commented)
    assert config == expected != reference
    assert "\n[plugins.qga]" not in config  # the package has no qga plugin: its table would refuse the config


def test_the_man_page_is_generated_from_the_argument_parser(daemon: Path) -> None:
    page = gzip.decompress((daemon / "usr/share/man/man8/hotplugd.8.gz").read_bytes()).decode()
    assert page.startswith(".TH HOTPLUGD \"8\"") or '.TH HOTPLUGD "8"' in page
    for command in ("run", "check", "status", "check\\-config", "restore\\-knobs"):
        assert command in page, command


def test_the_units_documentation_is_there_uncompressed(daemon: Path) -> None:
    unit = (daemon / "usr/lib/systemd/system/hotplugd.service").read_text()
    for line in unit.splitlines():
        if line.startswith("Documentation=file:"):
            assert (daemon / line.removeprefix("Documentation=file:").lstrip("/")).is_file(), line


def test_the_only_hand_written_maintainer_code_restores_the_knobs_after_the_stop(daemon: Path) -> None:
    prerm = (daemon / "DEBIAN/prerm").read_text()
    assert prerm.index("deb-systemd-invoke stop") < prerm.index("hotplugd restore-knobs")
    hand = [line for line in prerm.splitlines() if "restore-knobs" in line]
    assert hand == ["\thotplugd restore-knobs || true"]
    assert not (REPO / "debian/hotplugd.postinst").exists() and not (REPO / "debian/hotplugd.postrm").exists()


def test_the_library_has_sysfs_and_simulated_and_no_qga_nor_libvirt(library: Path) -> None:
    site = library / "usr/lib/python3/dist-packages"
    assert {p.name for p in site.glob("hotplugd*") if p.is_dir()} == {
        "hotplugd", "hotplugd_sysfs", "hotplugd_simulated", "hotplugd-0.1.0.dist-info"}
    entry_points = (site / "hotplugd-0.1.0.dist-info/entry_points.txt").read_text()
    assert "hotplugd_sysfs" in entry_points and "hotplugd_simulated" in entry_points
    assert "qga" not in entry_points and "libvirt" not in entry_points
    assert "pytest11" not in entry_points  # the pytest plugin is opt-in
    control = (library / "DEBIAN/control").read_text().splitlines()
    depends = next(line for line in control if line.startswith("Depends:"))
    assert "qemu" not in depends and "python3-anyio" in depends
    assert not (library / "usr/bin").exists()
