#!/usr/bin/env python3
"""Install hotplugd's systemd units, its default config, and switch off udev rules that race with it.

Run as root from a checkout, with any Python 3.11+ (standard library only)::

    python3 systemd/install.py --exec "$(command -v hotplugd)" --enable

What it does (each step is printed; ``--destdir`` installs into a staging tree instead):

1. ``hotplugd.service`` and ``hotplugd.socket`` into ``/etc/systemd/system``, unchanged; when
   the ``hotplugd`` program is not ``/usr/bin/hotplugd``, a drop-in
   ``hotplugd.service.d/10-exec.conf`` points ``ExecStart=`` at it (the hardening stays as shipped).
2. ``/etc/hotplugd/hotplugd.toml`` from ``config/hotplugd.toml`` with ``backend = "sysfs"``,
   owned by root, mode 0644; an existing file is never overwritten. Where it names dax devices
   (``[[plugins.sysfs.dax]]``), or with ``--dax``, the drop-in ``hotplugd.service.d/20-dax.conf``
   (``systemd/hotplugd-dax.conf``) grants what proving a device unused needs (CAP_SYS_PTRACE,
   CAP_DAC_READ_SEARCH: ``docs/dax.md``); otherwise a drop-in left from before is removed.
3. The docs the units' ``Documentation=`` names, into ``/usr/share/doc/hotplugd``.
4. Distro udev rules that online memory blocks themselves (found by the same reader as
   ``hotplugd check``): each rules file that has one gets a copy of the same name in
   ``/etc/udev/rules.d`` with those lines commented out, which masks the distro's file and keeps
   its other rules (CPU hot-add, say). Rules already in ``/etc`` are the operator's: reported only.
5. Without ``--destdir``: ``systemctl daemon-reload``, ``udevadm control --reload`` and, with
   ``--enable``, ``systemctl enable --now hotplugd.socket hotplugd.service``.

``--uninstall`` undoes it: stops and disables the units, writes back the kernel's onlining
knobs as hotplugd found them before it first changed them (recorded in
``<state_directory>/kernel-knobs.json``; ``--sysfs-root`` for a fake tree), removes the units,
the drop-in, the docs and the udev masks (the distro's rules apply again), and keeps
``/etc/hotplugd/hotplugd.toml``, the operator's.
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
import tomllib
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
#: The first line of each udev mask install.py writes (uninstall removes exactly those files).
COPY_PREFIX, COPY_SUFFIX = "# Copy of ", " without its memory onlining rules (systemd/install.py).\n"
#: The unit's StateDirectory=hotplugd, and the config's default state_directory.
STATE_DIRECTORY = "/var/lib/hotplugd"
#: The drop-in that lets hotplugd read other processes' /proc/PID/{maps,fd} (dax conversions only).
DAX_DROPIN = "hotplugd.service.d/20-dax.conf"


def load_reader(name: str) -> ModuleType:
    """``hotplugd_sysfs.<name>`` loaded from the checkout by path (it needs only the standard library)."""
    path = REPO / "plugins" / "hotplugd_sysfs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hotplugd_{name}_reader", path)
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


def names_dax_devices(config: Path) -> bool:
    """Whether the config has ``[[plugins.sysfs.dax]]`` rules (an unreadable config: no)."""
    try:
        data = tomllib.loads(config.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    sysfs = data.get("plugins", {}).get("sysfs", {}) if isinstance(data.get("plugins"), dict) else {}
    return isinstance(sysfs, dict) and bool(sysfs.get("dax"))


def install_dax_dropin(destdir: Path, unit_dir: str, wanted: bool) -> Path | None:
    """Install the dax drop-in when wanted; remove one install.py wrote before when not."""
    dropin = under(destdir, unit_dir) / DAX_DROPIN
    if not wanted:
        if dropin.exists():
            dropin.unlink()
            say(f"removed {dropin} (the config names no dax device: no capability is needed)")
        return None
    dropin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "systemd" / "hotplugd-dax.conf", dropin)
    os.chmod(dropin, 0o644)
    say(f"wrote {dropin} (dax devices: CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to prove them unused)")
    return dropin


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
        target.write_text(f"{COPY_PREFIX}{path.relative_to(destdir)}{COPY_SUFFIX}"
                          + disabled_copy(path.read_text(errors="replace"), lines))
        os.chmod(target, 0o644)
        say(f"masked {path} with {target} ({len(lines)} rule{'s' if len(lines) != 1 else ''} disabled)")
        written.append(target)
    if not by_file:
        say("no distro udev rule onlines memory")
    return written


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


def remove_files(destdir: Path, unit_dir: str) -> list[Path]:
    """The units, the drop-in, the docs and the udev masks install.py wrote; the removed masks returned."""
    units = under(destdir, unit_dir)
    for path in [*(units / name for name in UNITS), units / "hotplugd.service.d" / "10-exec.conf", units / DAX_DROPIN]:
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
    masks = []
    rules = under(destdir, UDEV_OVERRIDE_DIR)
    for path in sorted(rules.glob("*.rules")) if rules.is_dir() else []:
        first = path.read_text(errors="replace").partition("\n")[0] + "\n"
        if first.startswith(COPY_PREFIX) and first.endswith(COPY_SUFFIX):
            path.unlink()
            say(f"removed {path} (the distro's rules file applies again)")
            masks.append(path)
    return masks


def uninstall(opts: argparse.Namespace, live: bool) -> int:
    """Stop, restore the kernel's knobs, remove what install() wrote; 1 when a knob could not be restored."""
    if live:
        run(["systemctl", "disable", "--now", *UNITS], check=False)
    sysfs_root = opts.sysfs_root or (Path("/sys") if live else under(opts.destdir, "sys"))
    restored = restore_knobs(opts.exec_path, opts.destdir, sysfs_root)
    masks = remove_files(opts.destdir, opts.unit_dir)
    say(f"kept {under(opts.destdir, CONFIG_PATH)} (the operator's; remove it by hand)")
    if live:
        run(["systemctl", "daemon-reload"])
        if masks:
            run(["udevadm", "control", "--reload"])
    return 0 if restored else 1


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install hotplugd's systemd units and default config.")
    parser.add_argument("--destdir", type=Path, default=Path("/"), help="install under this root (default /)")
    parser.add_argument("--exec", dest="exec_path", default=SHIPPED_EXEC,
                        help=f"the hotplugd program (default {SHIPPED_EXEC})")
    parser.add_argument("--unit-dir", default="/etc/systemd/system", help="where the units go")
    parser.add_argument("--dax", action="store_true",
                        help="install the dax drop-in (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH) even if the config "
                             "names no dax device yet")
    parser.add_argument("--no-udev", action="store_true", help="leave udev rules alone")
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
    reason = hidden_program(opts.exec_path, (REPO / "systemd" / "hotplugd.service").read_text())
    if reason:
        parser.error(reason)
    install_units(opts.destdir, opts.unit_dir, opts.exec_path)
    config = install_config(opts.destdir)
    install_dax_dropin(opts.destdir, opts.unit_dir, opts.dax or names_dax_devices(config))
    install_docs(opts.destdir)
    masked = [] if opts.no_udev else disable_udev_rules(opts.destdir, load_reader("udev"))
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
