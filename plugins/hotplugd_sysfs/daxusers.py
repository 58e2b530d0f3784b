"""Who maps or holds ``/dev/daxX.Y`` open, and whether that can be proven (blocking: call from a worker thread).

Unbinding ``device_dax`` pulls the memory from under every process that maps the
device (its next access faults with SIGBUS): a device is converted only when every
process was inspected and none uses it. Fail closed:

- ``/proc/PID/maps`` of another user's process (or a non-dumpable one) needs
  ``ptrace_may_access(PTRACE_MODE_READ_FSCREDS)``: root needs ``CAP_SYS_PTRACE``;
  listing ``/proc/PID/fd`` (mode 0500, owned by the process's uid) needs
  ``CAP_DAC_READ_SEARCH``, reading its links ``CAP_SYS_PTRACE`` again. A process
  whose maps or fds cannot be read (EACCES, EPERM, any error but "gone") makes the
  device *possibly in use*; it is named (pid, uid, comm: ``status`` and ``comm``
  stay readable) with the capabilities this process lacks.
- ``/proc`` mounted ``hidepid=invisible`` or ``ptraceable`` (systemd's
  ``ProtectProc=``) does not even list the processes this one may not trace:
  without ``CAP_SYS_PTRACE`` nothing seen proves anything.
- A process gone meanwhile (ENOENT, ESRCH, its directory gone) uses nothing.

All reads go through the backend's file seam (``Sysfs.io``), where tests play the kernel.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .sysfs import SysfsIO

__all__ = ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "Uninspected", "Users", "device_users"]

CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
_GONE = (errno.ENOENT, errno.ESRCH)
#: hidepid values that hide (not only lock) the processes this one may not trace.
_HIDING = {"2", "invisible", "4", "ptraceable"}
_SHOWN = 3  # uninspected processes named in a message; the rest are counted


@dataclass(frozen=True, slots=True)
class Uninspected:
    """A process whose ``maps`` or ``fd`` could not be read: it may map the device."""

    pid: int
    what: str  # "maps" or "fd"
    errno: int
    uid: int | None = None
    comm: str | None = None

    def describe(self) -> str:
        who = ", ".join(x for x in (f"uid {self.uid}" if self.uid is not None else "",
                                     f"comm {self.comm!r}" if self.comm else "") if x)
        code = errno.errorcode.get(self.errno, str(self.errno))
        return f"pid {self.pid} ({who + ': ' if who else ''}{self.what} {code})"


@dataclass(frozen=True, slots=True)
class Users:
    """What a look through ``/proc`` proved about one device."""

    device: str
    pids: tuple[int, ...] = ()  # processes seen mapping it or holding it open
    uninspected: tuple[Uninspected, ...] = ()
    hidden: str = ""  # why /proc may not list every process ("" when it does)
    #: The capabilities this process lacks for a full look ("CAP_SYS_PTRACE", ...); None: unknown.
    missing: tuple[str, ...] | None = None

    @property
    def clear(self) -> bool:
        """Nobody uses it, and that is proven."""
        return not (self.pids or self.uninspected or self.hidden)

    def grant(self) -> str:
        if self.missing == ():
            return ("hotplugd holds CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH already: a security module "
                    "(AppArmor, SELinux) refused, or the error is the kernel's")
        caps = " and ".join(self.missing or ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"))
        return (f"grant {caps} (the unit's drop-in hotplugd.service.d/20-dax.conf: "
                "systemd/install.py --dax, docs/dax.md)")

    def describe(self) -> str | None:
        """Why the device is left as it is; None when it is clear."""
        dev = f"/dev/{self.device}"
        if self.pids:
            return f"{dev} is mapped or open by pid {', '.join(map(str, self.pids))}"
        if self.hidden:
            return f"{dev} may be mapped by a process hotplugd cannot see: {self.hidden}; {self.grant()}"
        if self.uninspected:
            named = ", ".join(u.describe() for u in self.uninspected[:_SHOWN])
            more = len(self.uninspected) - _SHOWN
            if more > 0:
                named += f" and {more} more"
            return (f"{dev} may be mapped or open: hotplugd could not inspect {named}; {self.grant()}")
        return None


def device_users(io: SysfsIO, proc: Path, name: str) -> Users:
    """Every process that maps ``/dev/<name>`` or has it open, and every one that could not be inspected."""
    dev = f"/dev/{name}"
    mark = f" {dev}\n".encode()  # a maps line ends with the mapped file's path
    own = str(os.getpid())  # hotplugd maps no dax device; its maps are among the largest to generate
    missing = _missing_caps(io, proc)
    try:
        pids = sorted((p for p in io.listdir(proc) if p.isdigit() and p != own), key=int)
    except OSError as exc:
        return Users(name, hidden=f"{proc} cannot be listed ({_code(exc)})", missing=missing)
    hidden = _hidden(io, proc, missing)
    users: list[int] = []
    blind: list[Uninspected] = []
    for pid in pids:
        what = "maps"
        try:
            where = proc / pid
            maps = io.read_bytes(where / "maps")
            if not maps:  # a kernel thread, or a leader that exited while its threads live on (mm and fds theirs)
                where = _live_thread(io, proc, pid) or where
                maps = io.read_bytes(where / "maps") if where != proc / pid else maps
            if mark in maps:
                users.append(int(pid))
                continue
            what = "fd"
            fds = where / "fd"
            for fd in io.listdir(fds):
                try:
                    if io.readlink(fds / fd) == dev:
                        users.append(int(pid))
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOENT:  # that fd closed meanwhile: the others still count
                        raise
        except OSError as exc:
            if exc.errno in _GONE or not io.lexists(proc / pid):
                continue
            blind.append(_uninspected(io, proc, pid, what, exc))
    return Users(name, tuple(sorted(users)), tuple(blind), hidden, missing)


def _live_thread(io: SysfsIO, proc: Path, pid: str) -> Path | None:
    """``<proc>/PID/task/TID`` of a thread other than the leader (None: the leader is the only one)."""
    try:
        tids = [t for t in io.listdir(proc / pid / "task") if t != pid]
    except FileNotFoundError:  # gone meanwhile: its own fd directory tells
        return None
    return proc / pid / "task" / tids[0] if tids else None


def _code(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _uninspected(io: SysfsIO, proc: Path, pid: str, what: str, exc: OSError) -> Uninspected:
    uid = comm = None
    try:
        status = io.read_bytes(proc / pid / "status").decode(errors="replace")
        uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), None)
        comm = io.read_bytes(proc / pid / "comm").decode(errors="replace").strip() or None
    except (OSError, ValueError, IndexError):
        pass
    return Uninspected(int(pid), what, exc.errno or errno.EIO, uid, comm)


def _missing_caps(io: SysfsIO, proc: Path) -> tuple[str, ...] | None:
    """Which of the two capabilities a full look needs this process lacks (``<proc>/self/status``); None: unknown."""
    try:
        status = io.read_bytes(proc / "self/status").decode(errors="replace")
        eff = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    wanted = ((CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"))
    return tuple(name for bit, name in wanted if not eff >> bit & 1)


def _hidden(io: SysfsIO, proc: Path, missing: tuple[str, ...] | None) -> str:
    """Why ``proc`` may not list every process: mounted ``hidepid=invisible`` (or ``ptraceable``) without
    CAP_SYS_PTRACE. With it, every process passes the ptrace check hidepid applies and none is hidden."""
    if missing is not None and "CAP_SYS_PTRACE" not in missing:
        return ""
    hidepid = (_mount_options(io, proc) or {}).get("hidepid", "")
    if hidepid in _HIDING:
        return (f"{proc} is mounted hidepid={hidepid} (the unit's ProtectProc=) and hotplugd lacks "
                "CAP_SYS_PTRACE, so other users' processes are not even listed")
    return ""


def _mount_options(io: SysfsIO, proc: Path) -> dict[str, str] | None:
    """The super options of the proc mount at ``proc``, from ``<proc>/self/mountinfo``; None: unknown."""
    try:
        text = io.read_bytes(proc / "self/mountinfo").decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) > sep + 3 and fields[4] == str(proc) and fields[sep + 1] == "proc":
            return dict(opt.partition("=")[::2] for opt in fields[sep + 3].split(","))
    return None
