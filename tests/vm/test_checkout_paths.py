"""The VM harness from any checkout path: a checkout the service's unit hides is run through an alias.

Unit tests of the path logic (which directories hotplugd.service hides, where the service finds the
checkout, what the initramfs binds, how the guest venv reaches the checkout and its editable
install), and one real-guest check (``vm``): this working tree copied under ``/var/tmp``
(``PrivateTmp=yes`` hides it from the service) with a venv of its own, the first scenario of
``test_systemd.py`` run from there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Assets, GuestConfig, HarnessError
from harness.initramfs import tmp_and_run
from harness.pytest_plugin import provisioned
from harness.systemd_guest import (
    CHECKOUT_ALIAS,
    GUEST_VENV,
    SERVICE_UNIT,
    SystemdGuest,
    checkout_module,
    console_script,
    find_systemd_assets,
    hidden_paths,
    service_path,
)
from test_systemd import SERVICE, install, start_and_online_a_hot_add

REPO = Path(__file__).resolve().parents[2]
#: Not part of a checkout: what a fresh clone lacks, or what is rebuilt.
NOT_CHECKED_OUT = (".git", ".venv", ".vm", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis")


TMP = ("/tmp", "/var/tmp")
HOME = ("/home", "/root", "/run/user")


# -- what the unit hides ------------------------------------------------------------------------


def test_the_shipped_unit_hides_tmp_var_tmp_and_the_homes() -> None:
    assert set(hidden_paths((REPO / SERVICE_UNIT).read_text())) >= {*TMP, *HOME}


@pytest.mark.parametrize(("unit", "hidden"), [
    ("[Service]\nPrivateTmp=yes\n", TMP),
    ("PrivateTmp=disconnected\n", TMP),
    ("DynamicUser=true\n", TMP),
    ("ProtectHome=yes\n", HOME),
    ("ProtectHome=tmpfs\n", HOME),
    ("PrivateTmp=no\nProtectHome=read-only\nProtectSystem=strict\n", ()),
    ("# PrivateTmp=yes\n; ProtectHome=yes\n", ()),
    ("PrivateTmp=yes\nPrivateTmp=false\n", ()),
    ("TemporaryFileSystem=/srv:ro /opt/x/\nInaccessiblePaths=-/data +/var/lib/y\n",
     ("/srv", "/opt/x", "/data", "/var/lib/y")),
    ("InaccessiblePaths=/a\nInaccessiblePaths=\nInaccessiblePaths=/b\n", ("/b",)),
], ids=["private-tmp", "disconnected", "dynamic-user", "protect-home", "home-tmpfs", "visible", "comments",
        "last-wins", "lists", "list-reset"])
def test_hidden_paths_of_unit_settings(unit: str, hidden: tuple[str, ...]) -> None:
    assert hidden_paths(unit) == hidden


# -- where the service finds the checkout -------------------------------------------------------


@pytest.mark.parametrize(("checkout", "seen"), [
    ("/tmp/ci/hotplugd", CHECKOUT_ALIAS),
    ("/var/tmp/hotplugd", CHECKOUT_ALIAS),
    ("/home/u/x", CHECKOUT_ALIAS),
    ("/root/x", CHECKOUT_ALIAS),
    ("/run/user/1000/x", CHECKOUT_ALIAS),
    ("/work/main", "/work/main"),
    ("/var/lib/ci/x", "/var/lib/ci/x"),
    ("/tmpfs/x", "/tmpfs/x"),
    ("/srv/home/x", "/srv/home/x"),
])
def test_the_service_finds_a_checkout_it_cannot_see_through_the_alias(checkout: str, seen: str) -> None:
    assert service_path(Path(checkout), hidden_paths((REPO / SERVICE_UNIT).read_text())) == Path(seen)


def test_a_unit_that_hides_the_alias_too_is_an_error() -> None:
    with pytest.raises(HarnessError, match="alias"):
        service_path(Path("/var/tmp/x"), hidden_paths("PrivateTmp=yes\nInaccessiblePaths=/run\n"))


# -- what the initramfs binds -------------------------------------------------------------------


def init_mounts(checkout: str, tmp_path: Path) -> list[str]:
    """The mount commands of ``initramfs.tmp_and_run`` for a checkout, run by sh with every command stubbed."""
    stubs = "".join(f'{cmd}() {{ echo "{cmd} $*"; }}\n' for cmd in ("mount", "umount", "mkdir"))
    script = f'{stubs}die() {{ echo "die $*"; exit 1; }}\nR=/newroot\n{tmp_and_run("")}'
    empty = tmp_path / "no-commands"
    empty.mkdir(exist_ok=True)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": str(empty), "AGENT": f"{checkout}/tests/vm/harness/agent.py"}).stdout
    assert "die" not in out, out
    return [line for line in out.splitlines() if line.startswith(("mount", "umount"))]


@pytest.mark.parametrize(("checkout", "covered"), [
    ("/tmp/ci/hotplugd", True),
    ("/run/user/0/x", True),
    ("/var/tmp/hotplugd", False),
    ("/home/u/x", False),
    ("/root/x", False),
    ("/work/main", False),
])
def test_the_initramfs_keeps_the_checkout_and_binds_the_alias(checkout: str, covered: bool, tmp_path: Path) -> None:
    mounts = init_mounts(checkout, tmp_path)
    keep, restore = f"mount --bind /newroot{checkout} /checkout", f"mount --bind /checkout /newroot{checkout}"
    tmpfs = [i for i, m in enumerate(mounts) if m.startswith("mount -t tmpfs")]
    assert mounts.index(keep) == 0 and len(tmpfs) == 2
    # Under the guest's own /tmp or /run the checkout is bound back over them; elsewhere it was never covered.
    assert (restore in mounts) == covered
    if covered:
        assert mounts.index(restore) > max(tmpfs)
    assert mounts.index(f"mount --bind /checkout /newroot{CHECKOUT_ALIAS}") > max(tmpfs)
    assert mounts[-1] == "umount /checkout"


# -- the guest venv -----------------------------------------------------------------------------


def test_the_guest_venv_imports_the_checkout_and_its_editable_install_through_the_alias(tmp_path: Path) -> None:
    """With the checkout's real path gone (as the unit hides it), everything comes from the alias:
    the checkout and its plugins, a module only the editable finder maps, a path line of a .pth."""
    editable = pytest.importorskip("setuptools.command.editable_wheel")
    real, seen = tmp_path / "real", tmp_path / "alias"  # `real` is never created
    site = seen / ".venv" / "lib" / "python3.11" / "site-packages"
    for package in ("vmtest_core", "plugins/vmtest_plugin", "examples/x/vmtest_extra", "lib/vmtest_legacy"):
        (seen / package).mkdir(parents=True)
        (seen / package / "__init__.py").write_text("")
    site.mkdir(parents=True)
    finder = "__editable___vmtest_0_1_finder"
    (site / f"{finder}.py").write_text(
        editable._finder_template(finder, {"vmtest_extra": f"{real}/examples/x/vmtest_extra"}, {}))
    (site / "__editable__.vmtest-0.1.pth").write_text(f"import {finder}; {finder}.install()\n")
    (site / "vmtest_legacy.pth").write_text(f"{real}/lib\n")
    guest_site = tmp_path / "guest-venv"
    guest_site.mkdir()
    (guest_site / "hotplugd_vmtest_checkout.py").write_text(checkout_module(str(real), str(seen), str(site)))
    (guest_site / "hotplugd-checkout.pth").write_text("import hotplugd_vmtest_checkout\n")
    modules = ["vmtest_core", "vmtest_plugin", "vmtest_extra", "vmtest_legacy"]
    code = (f"import importlib, json, site; site.addsitedir({str(guest_site)!r}); "
            f"print(json.dumps([importlib.import_module(m).__file__ for m in {modules!r}]))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    files = json.loads(out)
    assert files == [f"{seen}/vmtest_core/__init__.py", f"{seen}/plugins/vmtest_plugin/__init__.py",
                     f"{seen}/examples/x/vmtest_extra/__init__.py", f"{seen}/lib/vmtest_legacy/__init__.py"]


def test_the_guest_venv_runs_the_checkouts_own_console_script() -> None:
    module, function = console_script(REPO)
    assert importlib.util.find_spec(module) is not None and function.isidentifier()


# -- the real guest -----------------------------------------------------------------------------


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def copy_checkout(dest: Path) -> Path:
    """This working tree at ``dest`` with a venv of its own (this one's site-packages, hard-linked),
    whose editable install points at ``dest`` as ``pip install -e`` there would have."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*NOT_CHECKED_OUT), symlinks=True)
    for site in sorted((REPO / ".venv" / "lib").glob("python3*/site-packages")):
        target = dest / site.relative_to(REPO)
        shutil.copytree(site, target, copy_function=_link_or_copy, symlinks=True)
        real = re.compile(rf"(^|['\"]){re.escape(str(REPO))}(?=[/'\"]|$)", re.M)
        for path in target.glob("__editable__*"):
            text = path.read_text()
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(real.sub(lambda m: m.group(1) + str(dest), text))
            os.replace(tmp, path)  # a new file: the hard link to this venv's stays as it was
    return dest


@pytest.fixture
def var_tmp_checkout() -> Iterator[Path]:
    dest = Path(tempfile.mkdtemp(prefix="hotplugd-checkout-", dir="/var/tmp"))
    try:
        yield copy_checkout(dest / "hotplugd")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.vm
def test_the_service_runs_a_checkout_under_var_tmp(vm_assets: Assets, var_tmp_checkout: Path) -> None:
    """Check 1 of test_systemd.py from a checkout under /var/tmp, hidden from the service by PrivateTmp=yes."""
    assets = dataclasses.replace(provisioned(find_systemd_assets, vm_assets), project=var_tmp_checkout)
    with SystemdGuest(GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                                  virtio_mem=False), assets) as sd:
        install(sd)
        start_and_online_a_hot_add(sd)
        pid = sd.show(SERVICE, "MainPID")["MainPID"]
        in_service = ["nsenter", "-t", pid, "-m", "--"]
        # The premise: the unit hides the checkout's real path from the service.
        assert sd.agent.run([*in_service, "test", "-e", str(var_tmp_checkout)], check=False).returncode == 1
        # The service's hotplugd is this checkout's, seen through the alias.
        where = "import hotplugd; print(hotplugd.__file__)"
        origin = sd.agent.run([*in_service, f"{GUEST_VENV}/bin/python", "-c", where], timeout=120).stdout.strip()
        assert origin == f"{CHECKOUT_ALIAS}/hotplugd/__init__.py"
