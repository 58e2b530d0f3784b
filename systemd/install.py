#!/usr/bin/env python3
"""Install hotplugd's systemd units, its default config, and switch off udev rules that race with it.

Run as root from a checkout, with any Python 3.11+ (standard library only)::

    python3 systemd/install.py --exec "$(command -v hotplugd)" --enable

What it does (each step is printed; ``--destdir`` installs into a staging tree instead):

1. ``hotplugd.service`` and ``hotplugd.socket`` into ``/etc/systemd/system``, unchanged; when
   the ``hotplugd`` program is not ``/usr/bin/hotplugd``, a drop-in
   ``hotplugd.service.d/10-exec.conf`` points ``ExecStart=`` at it (the hardening stays as shipped).
2. ``/etc/hotplugd/hotplugd.toml`` from ``config/hotplugd.toml`` with ``backend = "sysfs"``,
   owned by root, mode 0644; an existing file is never overwritten.
3. The docs the units' ``Documentation=`` names, into ``/usr/share/doc/hotplugd``.
4. Distro udev rules that online memory blocks themselves (found by the same reader as
   ``hotplugd check``): each rules file that has one gets a copy of the same name in
   ``/etc/udev/rules.d`` with those lines commented out, which masks the distro's file and keeps
   its other rules (CPU hot-add, say). Rules already in ``/etc`` are the operator's: reported only.
5. Without ``--destdir``: ``systemctl daemon-reload``, ``udevadm control --reload`` and, with
   ``--enable``, ``systemctl enable --now hotplugd.socket hotplugd.service``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
UNITS = ("hotplugd.service", "hotplugd.socket")
SHIPPED_EXEC = "/usr/bin/hotplugd"
CONFIG_PATH = "etc/hotplugd/hotplugd.toml"
DOC_DIR = "usr/share/doc/hotplugd"
DOCS = (REPO / "docs" / "install.md", REPO / "README.md")
#: udev's rules directories, highest priority first; the first two belong to the operator.
UDEV_DIRS = ("etc/udev/rules.d", "run/udev/rules.d", "usr/local/lib/udev/rules.d", "usr/lib/udev/rules.d",
             "lib/udev/rules.d")
UDEV_OVERRIDE_DIR = "etc/udev/rules.d"
OPERATOR_UDEV_DIRS = ("etc/udev/rules.d", "run/udev/rules.d")
MARK = "# hotplugd (systemd/install.py): disabled, hotplugd onlines memory blocks: "


def load_udev_reader() -> ModuleType:
    """``hotplugd_sysfs.udev`` loaded from the checkout by path (it needs only the standard library)."""
    path = REPO / "plugins" / "hotplugd_sysfs" / "udev.py"
    spec = importlib.util.spec_from_file_location("hotplugd_udev_reader", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"install.py: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def under(destdir: Path, path: str) -> Path:
    return destdir / path.lstrip("/")


def say(message: str) -> None:
    print(f"install: {message}")


def install_units(destdir: Path, unit_dir: str, exec_path: str) -> list[Path]:
    """Copy the units verbatim; add an ``ExecStart=`` drop-in when the program lives elsewhere."""
    target = under(destdir, unit_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        shutil.copyfile(REPO / "systemd" / name, target / name)
        os.chmod(target / name, 0o644)
        written.append(target / name)
    dropin = target / "hotplugd.service.d" / "10-exec.conf"
    if exec_path != SHIPPED_EXEC:
        shipped = re.search(r"^ExecStart=(.*)$", (REPO / "systemd" / "hotplugd.service").read_text(), re.M)
        if shipped is None:
            raise SystemExit("install.py: hotplugd.service has no ExecStart= line")
        argv = shlex.split(shipped.group(1))
        argv[0] = exec_path
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("# Written by systemd/install.py: hotplugd is not at /usr/bin/hotplugd here.\n"
                          f"[Service]\nExecStart=\nExecStart={shlex.join(argv)}\n")
        os.chmod(dropin, 0o644)
        written.append(dropin)
    elif dropin.exists():
        dropin.unlink()
    for path in written:
        say(f"wrote {path}")
    return written


def default_config() -> str:
    """The reference config with the real host's backend."""
    text = (REPO / "config" / "hotplugd.toml").read_text()
    new, count = re.subn(r'^backend = "[^"]*"', 'backend = "sysfs"', text, count=1, flags=re.M)
    if count != 1:
        raise SystemExit("install.py: config/hotplugd.toml has no top-level `backend =` line")
    return new


def install_config(destdir: Path) -> Path:
    """Write the default config unless one exists; root-owned, mode 0644 (hotplugd refuses others)."""
    path = under(destdir, CONFIG_PATH)
    if path.exists():
        say(f"kept {path} (exists)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    path.write_text(default_config())
    os.chmod(path, 0o644)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    say(f"wrote {path}")
    return path


def install_docs(destdir: Path) -> None:
    target = under(destdir, DOC_DIR)
    target.mkdir(parents=True, exist_ok=True)
    for doc in DOCS:
        if doc.is_file():
            shutil.copyfile(doc, target / doc.name)
            os.chmod(target / doc.name, 0o644)
    say(f"wrote {target}")


def disabled_copy(text: str, first_lines: set[int]) -> str:
    """``text`` with the rules starting at ``first_lines`` (1-based, continuations too) commented out."""
    out, continuing = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if number in first_lines or continuing:
            out.append(MARK + line if number in first_lines else "# " + line)
            continuing = line.rstrip().endswith("\\")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def disable_udev_rules(destdir: Path, udev: ModuleType) -> list[Path]:
    """Mask each distro rules file that onlines memory with a copy whose memory rules are commented out."""
    dirs = [under(destdir, d) for d in UDEV_DIRS]
    operator = {under(destdir, d) for d in OPERATOR_UDEV_DIRS}
    by_file: dict[Path, set[int]] = {}
    for hit in udev.find_rules(dirs):
        if hit.path.parent in operator:
            say(f"left alone (the operator's own rule, remove it by hand): {hit}")
            continue
        by_file.setdefault(hit.path, set()).add(hit.line)
    written = []
    for path, lines in sorted(by_file.items()):
        target = under(destdir, UDEV_OVERRIDE_DIR) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# Copy of {path.relative_to(destdir)} without its memory onlining rules "
                          "(systemd/install.py).\n" + disabled_copy(path.read_text(errors="replace"), lines))
        os.chmod(target, 0o644)
        say(f"masked {path} with {target} ({len(lines)} rule{'s' if len(lines) != 1 else ''} disabled)")
        written.append(target)
    if not by_file:
        say("no distro udev rule onlines memory")
    return written


def run(argv: list[str]) -> None:
    say("$ " + shlex.join(argv))
    subprocess.run(argv, check=True)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install hotplugd's systemd units and default config.")
    parser.add_argument("--destdir", type=Path, default=Path("/"), help="install under this root (default /)")
    parser.add_argument("--exec", dest="exec_path", default=SHIPPED_EXEC,
                        help=f"the hotplugd program (default {SHIPPED_EXEC})")
    parser.add_argument("--unit-dir", default="/etc/systemd/system", help="where the units go")
    parser.add_argument("--no-udev", action="store_true", help="leave udev rules alone")
    parser.add_argument("--enable", action="store_true", help="enable and start the socket and the service")
    opts = parser.parse_args(args)
    if not opts.exec_path.startswith("/"):
        parser.error(f"--exec {opts.exec_path!r}: an absolute path is needed")
    live = opts.destdir.resolve() == Path("/")
    install_units(opts.destdir, opts.unit_dir, opts.exec_path)
    install_config(opts.destdir)
    install_docs(opts.destdir)
    masked = [] if opts.no_udev else disable_udev_rules(opts.destdir, load_udev_reader())
    if live:
        run(["systemctl", "daemon-reload"])
        if masked:
            run(["udevadm", "control", "--reload"])
        if opts.enable:
            run(["systemctl", "enable", "--now", *UNITS])
    elif opts.enable:
        say("--enable ignored with --destdir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
