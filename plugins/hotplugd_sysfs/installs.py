"""What the sysfs plugin installs beside hotplugd's units (``hotplugd_install_files``; ``hotplugd install-files``,
which ``systemd/install.py`` runs).

1. Distro udev rules that online memory blocks themselves (found by the same reader as
   ``hotplugd check``, :mod:`.udev`): each rules file that has one gets a copy of the same name in
   ``/etc/udev/rules.d`` with those lines commented out, which masks the distro's file and keeps
   its other rules (CPU hot-add, say). Rules already in ``/etc`` or ``/run`` are the operator's:
   reported only. On uninstall the copies (known by their first line) are removed.
2. Where the config names dax devices (``[[plugins.sysfs.dax]]``), or with ``--with dax``, the
   drop-in ``hotplugd.service.d/20-dax.conf`` (:data:`DAX_DROPIN`, the same text as
   ``systemd/hotplugd-dax.conf``, which hand installs copy) grants what proving a device unused
   needs (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: ``docs/dax.md``); otherwise one left from before is removed.
"""

from __future__ import annotations

from pathlib import Path

from hotplugd import Config, InstallFiles

from .udev import find_rules

#: udev's rules directories, highest priority first; the first two belong to the operator.
UDEV_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d",
             "/lib/udev/rules.d")
UDEV_OVERRIDE_DIR = "/etc/udev/rules.d"
OPERATOR_UDEV_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d")
UDEV_RELOAD = ("udevadm", "control", "--reload")
MARK = "# hotplugd (systemd/install.py): disabled, hotplugd onlines memory blocks: "
#: The first line of each udev mask (uninstall removes exactly those files; the words are install.py's, which
#: wrote them before the plugin did).
COPY_PREFIX, COPY_SUFFIX = "# Copy of ", " without its memory onlining rules (systemd/install.py).\n"
#: What ``install.py --no-udev`` (``--without udev``) leaves alone.
UDEV = "udev"
#: The dax drop-in's feature name (``install.py --dax``, ``--with dax``) and file, in the unit's drop-in directory.
DAX = "dax"
DAX_DROPIN_NAME = "hotplugd.service.d/20-dax.conf"
DAX_DROPIN = """\
# hotplugd.service.d/20-dax.conf: what converting [[plugins.sysfs.dax]] devices needs, and no more.
# systemd/install.py installs it where the config names dax devices (or with --dax); without
# dax rules the unit keeps its empty capability bounding set.
#
# hotplugd converts a devdax device to system-ram only when it proves that no process maps it
# or holds it open: unbinding device_dax pulls the memory from under such a process (SIGBUS).
# The proof reads every process's /proc/PID/maps and /proc/PID/fd links. Root without
# capabilities cannot, for another user's (or a non-dumpable) process:
# - /proc/PID/maps needs ptrace_may_access(PTRACE_MODE_READ_FSCREDS): CAP_SYS_PTRACE;
# - /proc/PID/fd is mode 0500, owned by the process's uid: listing it needs CAP_DAC_READ_SEARCH
#   (its links then need the ptrace check again);
# - ProtectProc=invisible (kept) lists only the processes hotplugd may trace: with
#   CAP_SYS_PTRACE, all of them.
# Without these hotplugd refuses every conversion ("possibly in use") and says what to grant.
[Service]
CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH
# CAP_SYS_PTRACE serves the /proc permission checks only: ptrace() and pidfd_getfd() are outside
# @system-service already; these would otherwise read or write another process's memory or
# compare its files.
SystemCallFilter=~process_vm_readv process_vm_writev kcmp
# /proc/PID/mem cannot be opened for writing (the mount is read-only); hotplugd writes nothing
# under /proc.
ReadOnlyPaths=/proc
"""


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


def is_mask(path: Path) -> bool:
    """Whether ``path`` is a udev mask this plugin (or install.py before it) wrote: by its first line."""
    try:
        with path.open(errors="replace") as f:
            first = f.readline()
    except OSError:
        return False
    return first.startswith(COPY_PREFIX) and first.endswith(COPY_SUFFIX)


def mask_udev_rules(files: InstallFiles) -> None:
    """Mask each distro rules file that onlines memory with a copy whose memory rules are commented out."""
    operator = {files.under(d) for d in OPERATOR_UDEV_DIRS}
    by_file: dict[Path, set[int]] = {}
    for hit in find_rules(files.under(d) for d in UDEV_DIRS):
        if hit.path.parent in operator:
            files.say(f"left alone (the operator's own rule, remove it by hand): {hit}")
            continue
        by_file.setdefault(hit.path, set()).add(hit.line)
    for path, lines in sorted(by_file.items()):
        target = files.under(UDEV_OVERRIDE_DIR) / path.name
        text = (f"{COPY_PREFIX}{path.relative_to(files.root)}{COPY_SUFFIX}"
                + disabled_copy(path.read_text(errors="replace"), lines))
        files.write(target, text, said=f"masked {path} with {target} ({len(lines)} rule{'s' if len(lines) != 1 else ''}"
                                       " disabled)", reload=UDEV_RELOAD)
    if not by_file:
        files.say("no distro udev rule onlines memory")


def unmask_udev_rules(files: InstallFiles) -> None:
    rules = files.under(UDEV_OVERRIDE_DIR)
    for path in sorted(rules.glob("*.rules")) if rules.is_dir() else []:
        if is_mask(path):
            files.remove(path, said=f"removed {path} (the distro's rules file applies again)", reload=UDEV_RELOAD)


def names_dax_devices(config: Config) -> bool:
    """Whether the config has ``[[plugins.sysfs.dax]]`` rules."""
    table = config.plugins.get("sysfs", {})
    return bool(table.get("dax"))


def install_files(files: InstallFiles, config: Config) -> None:
    dropin = files.unit_dir / DAX_DROPIN_NAME
    if files.uninstall:
        files.remove(dropin)
        if UDEV not in files.skip:
            unmask_udev_rules(files)
        return
    if DAX in files.features or names_dax_devices(config):
        files.write(dropin, DAX_DROPIN,
                    said=f"wrote {dropin} (dax devices: CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to prove them unused)")
    else:
        files.remove(dropin, said=f"removed {dropin} (the config names no dax device: no capability is needed)")
    if UDEV not in files.skip:
        mask_udev_rules(files)
