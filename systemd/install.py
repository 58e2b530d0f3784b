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
4. What the plugins install beside the units, as the hotplugd program ``--exec`` names says it
   (staged under ``--destdir``, that one; ``hotplugd install-files``: each plugin's
   ``hotplugd_install_files`` hook, its steps printed).
   The sysfs plugin's: a copy in ``/etc/udev/rules.d`` masking each distro udev rules file that
   onlines memory blocks (those lines commented out, its other rules kept; ``--no-udev``: none),
   and, where the config names dax devices (or with ``--dax``), the drop-in
   ``hotplugd.service.d/20-dax.conf`` (``systemd/hotplugd-dax.conf``) granting what proving a
   device unused needs (``docs/dax.md``).
5. Without ``--destdir``: ``systemctl daemon-reload`` and, with ``--enable``,
   ``systemctl enable --now hotplugd.socket hotplugd.service``.

The program must run (it is asked before anything is written): install hotplugd first.

``--uninstall`` undoes it: stops and disables the units, writes back the kernel's onlining
knobs as hotplugd found them before it first changed them (recorded in
``<state_directory>/kernel-knobs.json``; ``--sysfs-root`` for a fake tree), removes what the
plugins installed (``hotplugd install-files --uninstall``: the udev masks, the dax drop-in), the
units, the drop-in and the docs, and keeps ``/etc/hotplugd/hotplugd.toml``, the operator's.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNITS = ("hotplugd.service", "hotplugd.socket")
SHIPPED_EXEC = "/usr/bin/hotplugd"
CONFIG_PATH = "etc/hotplugd/hotplugd.toml"
DOC_DIR = "usr/share/doc/hotplugd"
DOCS = (REPO / "docs" / "install.md", REPO / "README.md")
#: The unit's StateDirectory=hotplugd, and the config's default state_directory.
STATE_DIRECTORY = "/var/lib/hotplugd"
#: ``--dax``: what the plugins install for dax devices, ahead of the config naming one.
DAX_FEATURE = "dax"


def under(destdir: Path, path: str) -> Path:
    return destdir / path.lstrip("/")


def say(message: str) -> None:
    print(f"install: {message}")


#: What the unit's settings hide from the service (PrivateTmp= replaces these with empty ones of its own,
#: ProtectHome=yes makes these inaccessible): a program or interpreter there fails with 203/EXEC.
HIDING = {"PrivateTmp": ("/tmp", "/var/tmp"), "ProtectHome": ("/home", "/root", "/run/user")}
FALSE = ("0", "no", "false", "off", "")


def hidden_by_unit(unit_text: str) -> dict[str, str]:
    """Each directory the shipped unit hides from the service -> the setting that hides it."""
    settings = dict(line.strip().split("=", 1) for line in unit_text.splitlines()
                    if "=" in line and not line.lstrip().startswith(("#", ";")))
    hidden = {}
    for key, paths in HIDING.items():
        value = settings.get(key, "no").strip().lower()
        if value not in FALSE and not (key == "ProtectHome" and value == "read-only"):
            hidden.update({path: f"{key}={settings[key].strip()}" for path in paths})
    return hidden


def interpreter(path: str) -> str | None:
    """The ``#!`` interpreter of a script (a venv's console script names the venv's python)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return parts[0] if parts else None


def hidden_program(exec_path: str, unit_text: str) -> str | None:
    """Why the unit's service could not run ``exec_path`` (it, its real path or its interpreter hidden), or None."""
    hidden = hidden_by_unit(unit_text)
    candidates = [exec_path, os.path.realpath(exec_path)]
    shebang = interpreter(exec_path)
    if shebang:
        candidates += [shebang, os.path.realpath(shebang)]
    for path in dict.fromkeys(candidates):
        for directory, setting in hidden.items():
            if path == directory or path.startswith(directory + "/"):
                what = "it" if path in (exec_path, candidates[1]) else f"its interpreter {path}"
                return (f"--exec {exec_path}: {what} is under {directory}, which the unit's {setting} hides from "
                        f"the service (it would fail with 203/EXEC); install hotplugd elsewhere, e.g. a venv "
                        f"under /opt/hotplugd (docs/install.md)")
    return None


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


def plugin_files(exec_path: str, destdir: Path, unit_dir: str, *flags: str) -> bool:
    """``hotplugd install-files``: what the plugins install beside the units, each step said; False when it failed."""
    argv = [program(exec_path, destdir), "install-files", "--root", str(destdir), "--unit-dir", unit_dir, *flags]
    say("$ " + shlex.join(argv))
    try:
        done = subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        say(f"cannot run {argv[0]} to ask its plugins what they install: {exc.strerror or exc}")
        return False
    for line in done.stdout.splitlines():
        say(line)
    if done.returncode != 0:
        say(f"{argv[0]} install-files failed (exit {done.returncode})")
    return done.returncode == 0


def program(exec_path: str, destdir: Path) -> str:
    """The hotplugd to run here: ``--exec``'s, or with ``--destdir`` the one staged there where it is."""
    staged = under(destdir, exec_path)
    live = destdir.resolve() == Path("/")
    return str(staged) if not live and staged.is_file() and os.access(staged, os.X_OK) else exec_path


def runnable(exec_path: str, destdir: Path) -> str | None:
    """Why the program cannot be asked what its plugins install, or None."""
    path = program(exec_path, destdir)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return (f"--exec {exec_path}: no such program (here or under --destdir); install.py asks the hotplugd it "
                f"installs the units for what its plugins install: install hotplugd first (docs/install.md)")
    return None


def run(argv: list[str], check: bool = True) -> None:
    say("$ " + shlex.join(argv))
    subprocess.run(argv, check=check)


# -- uninstall -------------------------------------------------------------------------------


def state_directory(destdir: Path) -> Path:
    """Where the knobs were recorded: the installed config's ``state_directory``, else the default."""
    config = under(destdir, CONFIG_PATH)
    try:
        value = tomllib.loads(config.read_text()).get("state_directory", STATE_DIRECTORY)
    except (OSError, tomllib.TOMLDecodeError):
        value = STATE_DIRECTORY
    return under(destdir, value if isinstance(value, str) and value.startswith("/") else STATE_DIRECTORY)


def restore_knobs(exec_path: str, destdir: Path, sysfs_root: Path) -> bool:
    """``hotplugd restore-knobs`` (the logic is hotplugd's, shared with the Debian package's prerm)."""
    if not os.access(exec_path, os.X_OK):
        say(f"cannot run {exec_path} to restore the kernel's onlining knobs (--exec names the hotplugd program; "
            f"`hotplugd restore-knobs` does it by hand)")
        return False
    config = under(destdir, CONFIG_PATH)
    argv = [exec_path, "restore-knobs", *(["--config", str(config)] if config.is_file() else []),
            "--set", f'state_directory="{state_directory(destdir)}"', "--set", f'plugins.sysfs.root="{sysfs_root}"']
    say("$ " + shlex.join(argv))
    done = subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines():
        say(line)
    return done.returncode == 0


def remove_files(destdir: Path, unit_dir: str) -> None:
    """The units, the ExecStart= drop-in and the docs install.py wrote (the plugins' files are theirs to remove)."""
    units = under(destdir, unit_dir)
    for path in [*(units / name for name in UNITS), units / "hotplugd.service.d" / "10-exec.conf"]:
        if path.exists():
            path.unlink()
            say(f"removed {path}")
    with_dropins = units / "hotplugd.service.d"
    if with_dropins.is_dir() and not any(with_dropins.iterdir()):
        with_dropins.rmdir()
    docs = under(destdir, DOC_DIR)
    if docs.is_dir():
        shutil.rmtree(docs)
        say(f"removed {docs}")


def uninstall(opts: argparse.Namespace, live: bool) -> int:
    """Stop, restore the kernel's knobs, remove what install() and the plugins wrote; 1 when a knob could not
    be restored or the plugins' files not removed."""
    if live:
        run(["systemctl", "disable", "--now", *UNITS], check=False)
    sysfs_root = opts.sysfs_root or (Path("/sys") if live else under(opts.destdir, "sys"))
    restored = restore_knobs(opts.exec_path, opts.destdir, sysfs_root)
    removed = plugin_files(opts.exec_path, opts.destdir, opts.unit_dir, "--uninstall")
    remove_files(opts.destdir, opts.unit_dir)
    say(f"kept {under(opts.destdir, CONFIG_PATH)} (the operator's; remove it by hand)")
    if live:
        run(["systemctl", "daemon-reload"])
    return 0 if restored and removed else 1


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install hotplugd's systemd units and default config.")
    parser.add_argument("--destdir", type=Path, default=Path("/"), help="install under this root (default /)")
    parser.add_argument("--exec", dest="exec_path", default=SHIPPED_EXEC,
                        help=f"the hotplugd program (default {SHIPPED_EXEC})")
    parser.add_argument("--unit-dir", default="/etc/systemd/system", help="where the units go")
    parser.add_argument("--dax", action="store_true",
                        help="install the dax drop-in (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH) even if the config "
                             "names no dax device yet (--with dax)")
    parser.add_argument("--with", dest="features", action="append", default=[], metavar="NAME",
                        help="what a plugin installs for NAME, ahead of the config naming it (repeatable)")
    parser.add_argument("--no-udev", action="store_true", help="leave udev rules alone (--without udev)")
    parser.add_argument("--enable", action="store_true", help="enable and start the socket and the service")
    parser.add_argument("--uninstall", action="store_true",
                        help="stop hotplugd, restore the kernel's onlining knobs as it found them, remove what "
                             "install.py wrote (the config stays)")
    parser.add_argument("--sysfs-root", type=Path, default=None,
                        help="with --uninstall: the sysfs whose knobs are restored (default /sys, or DESTDIR/sys "
                             "with --destdir)")
    opts = parser.parse_args(args)
    if not opts.exec_path.startswith("/"):
        parser.error(f"--exec {opts.exec_path!r}: an absolute path is needed")
    if opts.sysfs_root is not None and not opts.uninstall:
        parser.error("--sysfs-root goes with --uninstall")
    live = opts.destdir.resolve() == Path("/")
    if opts.uninstall:
        return uninstall(opts, live)
    reason = hidden_program(opts.exec_path, (REPO / "systemd" / "hotplugd.service").read_text()) or runnable(
        opts.exec_path, opts.destdir)
    if reason:
        parser.error(reason)
    install_units(opts.destdir, opts.unit_dir, opts.exec_path)
    install_config(opts.destdir)
    install_docs(opts.destdir)
    features = [*opts.features, *([DAX_FEATURE] if opts.dax else [])]
    flags = [*(f"--with={name}" for name in features), *(["--without=udev"] if opts.no_udev else [])]
    if not plugin_files(opts.exec_path, opts.destdir, opts.unit_dir, *flags):
        return 1
    if live:
        run(["systemctl", "daemon-reload"])
        if opts.enable:
            run(["systemctl", "enable", "--now", *UNITS])
    elif opts.enable:
        say("--enable ignored with --destdir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
