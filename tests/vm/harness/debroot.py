"""A clean Debian 13 (trixie) root that builds hotplugd's Debian packages and boots in the systemd guest.

::

    python3 tests/vm/harness/debroot.py      # what scripts/provision-deb runs: the root, the build, lintian

:func:`ensure_root` makes ``.vm/trixie/root`` with ``debootstrap --variant=minbase trixie`` from
Debian's archive (the mirror apt uses here), with what a boot and the guest agent need (systemd,
udev, python3), hotplugd's runtime dependencies from Debian, and its build dependencies installed
by apt in the root. It is cached: rebuilt only when missing or when :data:`PACKAGES` changed.

:func:`build` copies the checkout's files (``git ls-files``) into the root, runs
``dpkg-buildpackage -b`` there and ``lintian`` on the result, and leaves the ``.deb`` files, the
build log and lintian's output in ``.vm/trixie/out``, rebuilt when a source file changed. The
build tree is removed from the root afterwards, so the root stays the clean system the guest
boots (:class:`harness.systemd_guest.SystemdGuest` ``root=``): installing the packages there is the
test's job; :func:`installed` makes a copy of the root with them installed, for a guest that boots
with hotplugd's unit from the start (``tests/vm/test_deb_boot.py``). Every chroot runs in a mount
namespace of its own (``unshare --mount``) with the root's /proc, /dev/pts and /tmp mounted in it: they
go when it ends, nothing stays mounted.

Standard library only (``scripts/provision-deb`` runs it with the system's python3).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "trixie"
#: What the guest boots with: systemd as PID 1, udev, python3 for the harness's agent.
BOOT = ("systemd", "udev", "python3", "kmod")
#: hotplugd's runtime dependencies (debian/control's ${python3:Depends}), in the root before the
#: guest boots: the guest has no network, so `apt install ./*.deb` there needs them present.
RUNTIME = ("python3-anyio", "python3-pluggy", "python3-structlog", "python3-prometheus-client", "python3-h11",
           "python3-rich")
#: debian/control's Build-Depends (and the tests' Depends), and lintian.
BUILD = ("debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-all", "python3-setuptools",
         "python3-argparse-manpage", "python3-pytest", "python3-pytest-asyncio", "python3-pytest-rerunfailures",
         "python3-hypothesis", "lintian",
         "build-essential")
PACKAGES = (*BOOT, *RUNTIME, *BUILD)
BUILD_DIR = "/build"


def project_root() -> Path:
    return Path(__file__).resolve().parents[3]


def vm_dir(project: Path | None = None) -> Path:
    return (project or project_root()) / ".vm" / SUITE


def mirror() -> str:
    """The Debian archive apt uses on this machine (deb822 ``URIs:`` or a one-line ``deb``), else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if words[:1] in (["URIs:"], ["deb"]):
                for uri in words[1:]:
                    if "://" in uri and uri.rstrip("/").endswith("/debian"):
                        return uri
    return "http://deb.debian.org/debian"


def log(message: str) -> None:
    print(f"debroot: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log("$ " + shlex.join(argv))
    return subprocess.run(argv, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def chroot(root: Path, script: str, *, log_to: Path | None = None, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) in ``root``, in a private mount namespace with the root's /proc, /dev/pts and /tmp."""
    r = shlex.quote(str(root))
    inner = (f"mount -t proc proc {r}/proc && mount -t devpts -o newinstance devpts {r}/dev/pts && "
             f"mount -t tmpfs tmpfs {r}/tmp && exec chroot {r} /bin/sh -ec {shlex.quote(script)}")
    environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    log(f"chroot {root}: {script}")
    out = open(log_to, "a") if log_to else None  # noqa: SIM115
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                              env=environ, text=True, stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT,
                              check=False)
    finally:
        if out:
            out.close()
    if check and done.returncode != 0:
        tail = "\n".join((log_to.read_text() if log_to else done.stdout or "").splitlines()[-60:])
        raise RuntimeError(f"chroot {root}: {script!r} exited {done.returncode}:\n{tail}")
    return done


class Locked:
    """An exclusive lock on ``.vm/trixie/lock`` (two test processes may provision at once)."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.path = base / "lock"

    def __enter__(self) -> Locked:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def digest(packages: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([SUITE, packages]).encode()).hexdigest()[:16]


def root_digest() -> str:
    return digest(PACKAGES)


def ensure_root(project: Path | None = None) -> Path:
    """``.vm/trixie/root``: made now when missing, its build dependencies installed when they changed; its path.

    The stamp keeps what debootstrap installed and what apt added apart: a changed :data:`BUILD` list
    is installed into the existing root, a changed :data:`BOOT` or :data:`RUNTIME` makes a new root.
    """
    base = vm_dir(project)
    root, stamp = base / "root", base / "root.stamp"
    with Locked(base):
        try:
            have = json.loads(stamp.read_text())
        except (OSError, ValueError):
            have = {}
        if not root.is_dir() or have.get("debootstrap") != digest((*BOOT, *RUNTIME)):
            if shutil.which("debootstrap") is None:
                raise RuntimeError("debootstrap is not installed (scripts/provision-deb installs it)")
            stamp.unlink(missing_ok=True)
            if root.exists():
                shutil.rmtree(root)
            part = base / "root.partial"
            if part.exists():
                shutil.rmtree(part)
            t0 = time.monotonic()
            run(["debootstrap", "--variant=minbase", f"--include={','.join((*BOOT, *RUNTIME))}", SUITE, str(part),
                 mirror()], stdout=subprocess.DEVNULL)
            part.rename(root)
            have = {"debootstrap": digest((*BOOT, *RUNTIME))}
            stamp.write_text(json.dumps(have) + "\n")
            log(f"debootstrap --variant=minbase {SUITE}: {time.monotonic() - t0:.0f} s")
        if have.get("apt") != digest(BUILD):
            t0 = time.monotonic()
            chroot(root, "apt-get update -q && apt-get install -y -q --no-install-recommends " + " ".join(BUILD)
                   + " && apt-get clean", log_to=base / "root.log")
            have["apt"] = digest(BUILD)
            stamp.write_text(json.dumps(have) + "\n")
            log(f"build dependencies: {time.monotonic() - t0:.0f} s")
        return root


def source_files(project: Path) -> list[str]:
    """The checkout's files as git has them (tracked, and new ones not ignored): what a clean clone builds."""
    out = subprocess.run(["git", "-C", str(project), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and ((project / p).exists() or (project / p).is_symlink()))


def source_digest(project: Path, files: list[str]) -> str:
    """The files' names and contents, but the guest tests' own (tests/vm: they never run in the build)."""
    h = hashlib.sha256(root_digest().encode())
    for name in files:
        if name.startswith("tests/vm/"):
            continue
        path = project / name
        h.update(name.encode() + b"\0")
        h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return h.hexdigest()[:16]


def build(project: Path | None = None, *, force: bool = False) -> Path:
    """Build the packages in the root and lint them; ``.vm/trixie/out`` (the .debs, build.log, lintian.txt)."""
    project = project or project_root()
    root = ensure_root(project)
    base = vm_dir(project)
    out, stamp = base / "out", base / "out.stamp"
    files = source_files(project)
    digest = source_digest(project, files)
    with Locked(base):
        if not force and stamp.is_file() and stamp.read_text().strip() == digest and any(out.glob("*.deb")):
            return out
        stamp.unlink(missing_ok=True)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        build_dir = root / BUILD_DIR.lstrip("/")
        if build_dir.exists():
            shutil.rmtree(build_dir)
        src = build_dir / "hotplugd"
        for name in files:
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            path = project / name
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, target)
        t0 = time.monotonic()
        try:
            build_cmd = f"cd {BUILD_DIR}/hotplugd && dpkg-buildpackage -b -us -uc"
            done = chroot(root, build_cmd, log_to=out / "build.log", check=False)
            if done.returncode != 0 and "dh_auto_test: error" in (out / "build.log").read_text():
                # The package's tests failed at build: kept for tests/vm/test_deb.py to report as a failure
                # of its own, and the packages built without them (DEB_BUILD_OPTIONS=nocheck) so that
                # the guest tests still run: one failing test must not stop every other.
                (out / "build.log").rename(out / "build-tests-failed.log")
                chroot(root, build_cmd, log_to=out / "build.log", env={"DEB_BUILD_OPTIONS": "nocheck"})
            elif done.returncode != 0:
                raise RuntimeError(f"dpkg-buildpackage exited {done.returncode}:\n"
                                   + "\n".join((out / "build.log").read_text().splitlines()[-60:]))
            t1 = time.monotonic()
            # as nobody: lintian warns when it runs as root
            lint = chroot(root, f"cd {BUILD_DIR} && HOME=/tmp setpriv --reuid=nobody --regid=nogroup --clear-groups "
                                "lintian --info --display-info --fail-on error,warning hotplugd_*.changes", check=False)
            (out / "lintian.txt").write_text(lint.stdout)
            for deb in build_dir.glob("*.deb"):
                shutil.copy2(deb, out / deb.name)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        log(f"built {', '.join(sorted(p.name for p in out.glob('*.deb')))} in {t1 - t0:.0f} s; "
            f"lintian exit {lint.returncode}")
        if lint.returncode != 0:
            raise RuntimeError(f"lintian failed (exit {lint.returncode}):\n{lint.stdout}")
        stamp.write_text(digest + "\n")
        return out


def installed(project: Path | None = None) -> Path:
    """``.vm/trixie/installed``: a copy of the clean root with the packages :func:`build` made installed by apt
    (in a chroot: the units enabled as the package enables them, nothing started), for a guest that boots with
    hotplugd from the start. Rebuilt when the root or the packages changed; the clean root stays as it was."""
    project = project or project_root()
    root, out = ensure_root(project), build(project)  # each takes the lock itself: not under ours
    base = vm_dir(project)
    target, stamp = base / "installed", base / "installed.stamp"
    debs = sorted(out.glob("*.deb"))
    digest = hashlib.sha256(json.dumps([root_digest(), (base / "out.stamp").read_text().strip(),
                                        [p.name for p in debs]]).encode()).hexdigest()[:16]
    with Locked(base):
        if target.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
            return target
        stamp.unlink(missing_ok=True)
        part = base / "installed.partial"
        for old in (target, part):
            if old.exists():
                shutil.rmtree(old)
        t0 = time.monotonic()
        run(["cp", "-a", "--reflink=auto", str(root), str(part)])
        (part / "root" / "debs").mkdir()
        for deb in debs:
            shutil.copy2(deb, part / "root" / "debs" / deb.name)
        chroot(part, "apt-get install -y -q --no-install-recommends /root/debs/*.deb && rm -r /root/debs",
               log_to=base / "installed.log")
        part.rename(target)
        stamp.write_text(digest + "\n")
        log(f"installed {', '.join(p.name for p in debs)} into a copy of the root: {time.monotonic() - t0:.0f} s")
        return target


def main() -> int:
    try:
        out = build(force="--force" in sys.argv[1:])
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"debroot: {exc}", file=sys.stderr)
        return 1
    lintian = (out / "lintian.txt").read_text()
    print(f"debroot: packages in {out}: {' '.join(sorted(p.name for p in out.glob('*.deb')))}")
    print("debroot: lintian: " + (lintian.strip() or "(no tag)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
