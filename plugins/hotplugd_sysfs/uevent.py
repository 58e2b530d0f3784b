"""Kernel uevent datagrams: ``ACTION@DEVPATH\\0KEY=VALUE\\0...``, parsed without raising.

Pure functions over bytes, safe on any input (fuzzed with hypothesis here, and
meant for atheris): :func:`parse` returns None for anything malformed.
:func:`memory_header` is the cheap first look that lets the reader skip the
other subsystems' events before any full parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The kernel's ``UEVENT_BUFFER_SIZE`` is 2048 bytes of environment, plus the header;
#: anything larger did not come from the kernel's uevent code.
MAX_UEVENT = 8192
#: Where memory block devices live; their events' DEVPATH starts with this.
MEMORY_DEVPATH = "/devices/system/memory/memory"
_MEMORY_MARK = b"@" + MEMORY_DEVPATH.encode()


@dataclass(frozen=True, slots=True)
class UEvent:
    """One parsed uevent: the header's action and devpath and every ``KEY=VALUE`` of the body."""

    action: str
    devpath: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def subsystem(self) -> str | None:
        return self.env.get("SUBSYSTEM")

    @property
    def seqnum(self) -> int | None:
        value = self.env.get("SEQNUM", "")
        return int(value) if value.isdigit() else None

    @property
    def synthetic(self) -> bool:
        """Replayed by a write to the device's ``uevent`` file (``udevadm trigger``), not a real change."""
        return "SYNTH_UUID" in self.env

    @property
    def memory_index(self) -> int | None:
        """N for ``/devices/system/memory/memoryN``, else None."""
        if self.subsystem not in (None, "memory") or not self.devpath.startswith(MEMORY_DEVPATH):
            return None
        digits = self.devpath[len(MEMORY_DEVPATH):]
        if not digits.isascii() or not digits.isdigit() or len(digits) > 9:
            return None
        return int(digits)


def memory_header(data: bytes) -> bool | None:
    """Cheap triage before parsing: True for a memory block's event, False for another device's.

    None when ``data`` has no ``ACTION@DEVPATH`` header at all (malformed).
    Looks only at the header, so other subsystems cost one ``find``.
    """
    end = data.find(b"\0", 0, MAX_UEVENT)
    header = data[: end if end >= 0 else MAX_UEVENT]
    at = header.find(b"@")
    if at <= 0 or at == len(header) - 1:
        return None
    return header.startswith(_MEMORY_MARK, at)


def parse(data: bytes) -> UEvent | None:
    """The uevent in ``data``, or None when it is malformed. Never raises.

    Malformed: larger than :data:`MAX_UEVENT`, no ``ACTION@DEVPATH`` header,
    a body field without ``=`` or with an empty key, a NUL missing at the end,
    or ``ACTION``/``DEVPATH`` keys that contradict the header.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) > MAX_UEVENT:
        return None
    raw = bytes(data)
    if not raw.endswith(b"\0"):
        return None
    # One decode for the whole datagram: a replaced byte never becomes, nor swallows,
    # the ASCII separators (NUL, "@", "=", "/"), so the fields split as the bytes would.
    fields = _text(raw[:-1]).split("\0")
    action, at, devpath = fields[0].partition("@")
    if not at or not action or not devpath.startswith("/"):
        return None
    env: dict[str, str] = {}
    for item in fields[1:]:
        key, eq, value = item.partition("=")
        if not eq or not key or "@" in key:
            return None
        env[key] = value
    if env.get("ACTION", action) != action or env.get("DEVPATH", devpath) != devpath:
        return None
    return UEvent(action, devpath, env)


def encode(action: str, devpath: str, env: dict[str, str] | None = None) -> bytes:
    """The datagram the kernel would send (``ACTION`` and ``DEVPATH`` added to ``env`` first)."""
    items = {"ACTION": action, "DEVPATH": devpath, **(env or {})}
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in items.items())
    return f"{action}@{devpath}".encode() + b"\0" + body


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
