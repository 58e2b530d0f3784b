"""The guest-agent commands hotplugd uses, with their replies checked and typed, whatever carries them.

Each function takes an :class:`Agent`: anything with an async ``execute``
(the qga backend's socket client, the libvirt backend's ``qemuAgentCommand``).
A reply of the wrong shape raises :class:`~hotplugd_guestagent.errors.AgentError`
(the backend treats it like a timeout: try again later), never a KeyError.
:func:`unwrap` checks a whole reply object (``{"return": ...}`` or ``{"error": ...}``)
for transports that hand over the agent's reply as it came.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import AgentError, AgentProtocolError, CommandFailed

#: qga's GuestMemoryBlockResponseType values.
SUCCESS = "success"
NOT_FOUND = "not-found"
NOT_SUPPORTED = "operation-not-supported"
FAILED = "operation-failed"
#: Paths inside each guest, read through its agent (never this host's files).
GUEST_SYSFS = "/sys"
GUEST_MEMINFO = "/proc/meminfo"
GUEST_AUTO_ONLINE = f"{GUEST_SYSFS}/devices/system/memory/auto_online_blocks"
#: No guest has a block at or past this phys-index (2^52 bytes of physical address space in 2^20-byte blocks):
#: a listing that claims one is not believed.
MAX_PHYS_INDEX = 1 << 32


class Agent(Protocol):
    """What carries requests to one guest's agent: ``execute`` returns the reply's ``return`` value,
    or raises an :class:`AgentError` (:class:`CommandFailed` for an error object)."""

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any: ...

    def abort(self) -> None: ...

    async def close(self) -> None: ...


def request(command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request object of ``command``."""
    message: dict[str, Any] = {"execute": command}
    if arguments is not None:
        message["arguments"] = arguments
    return message


def short(reply: Any) -> str:
    """A reply for a log line or a message: a hostile one may be megabytes."""
    text = repr(reply)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


def unwrap(command: str, reply: Any, who: str = "") -> Any:
    """The ``return`` value of a whole reply object; :class:`CommandFailed` for an error object,
    :class:`AgentProtocolError` for anything else."""
    prefix = f"{who}: " if who else ""
    if not isinstance(reply, dict):
        raise AgentProtocolError("protocol_error", f"{prefix}unexpected reply to {command}: {short(reply)}")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        raise CommandFailed(command, str(error.get("class", "?")), str(error.get("desc", reply["error"])))
    if "return" not in reply:
        raise AgentProtocolError("protocol_error", f"{prefix}unexpected reply to {command}: {short(reply)}")
    return reply["return"]


@dataclass(frozen=True, slots=True)
class SetResult:
    """One block's answer to ``guest-set-memory-blocks``."""

    phys_index: int
    response: str
    error_code: int | None = None


def _bad(command: str, reply: Any) -> AgentError:
    return AgentProtocolError("protocol_error", f"{command}: unexpected reply {str(reply)[:200]!r}")


def _phys_index(item: Any) -> int | None:
    """An answer's ``phys-index`` when it is one a guest can have, else None."""
    phys = item.get("phys-index") if isinstance(item, dict) else None
    return phys if isinstance(phys, int) and not isinstance(phys, bool) and 0 <= phys < MAX_PHYS_INDEX else None


async def list_blocks(client: Agent) -> dict[int, bool]:
    """Every memory block of the guest: phys_index → online (the agent lists them unsorted)."""
    reply = await client.execute("guest-get-memory-blocks")
    if not isinstance(reply, list):
        raise _bad("guest-get-memory-blocks", reply)
    blocks: dict[int, bool] = {}
    for item in reply:
        if _phys_index(item) is None or not isinstance(item.get("online"), bool):
            raise _bad("guest-get-memory-blocks", item)
        blocks[item["phys-index"]] = item["online"]
    return blocks


async def block_size(client: Agent) -> int:
    reply = await client.execute("guest-get-memory-block-info")
    if not (isinstance(reply, dict) and isinstance(reply.get("size"), int) and reply["size"] > 0):
        raise _bad("guest-get-memory-block-info", reply)
    return int(reply["size"])


async def online_vcpus(client: Agent) -> int:
    reply = await client.execute("guest-get-vcpus")
    if not isinstance(reply, list):
        raise _bad("guest-get-vcpus", reply)
    return sum(1 for cpu in reply if isinstance(cpu, dict) and cpu.get("online") is True)


async def set_online(client: Agent, indices: list[int], timeout: float) -> list[SetResult]:
    """``guest-set-memory-blocks``: online ``indices``; one result per block, in request order."""
    request = {"mem-blks": [{"phys-index": i, "online": True} for i in indices]}
    reply = await client.execute("guest-set-memory-blocks", request, timeout=timeout)
    if not isinstance(reply, list) or len(reply) != len(indices):
        raise _bad("guest-set-memory-blocks", reply)
    results = []
    for item in reply:
        if _phys_index(item) is None or not isinstance(item.get("response"), str):
            raise _bad("guest-set-memory-blocks", item)
        code = item.get("error-code")
        results.append(SetResult(item["phys-index"], item["response"], code if isinstance(code, int) else None))
    return results


async def read_file(client: Agent, path: str, limit: int = 1 << 20) -> str | None:
    """A guest file's text through guest-file-open/read/close; None when the guest refuses (or blocks those
    commands)."""
    try:
        handle = await client.execute("guest-file-open", {"path": path, "mode": "r"})
    except CommandFailed:
        return None
    data = b""
    try:
        while len(data) < limit:
            chunk = await client.execute("guest-file-read", {"handle": handle, "count": 65536})
            if not isinstance(chunk, dict):
                raise _bad("guest-file-read", chunk)
            data += base64.b64decode(chunk.get("buf-b64", ""))
            if chunk.get("eof") or not chunk.get("count"):
                break
    finally:
        with contextlib.suppress(AgentError):
            await client.execute("guest-file-close", {"handle": handle})
    return data.decode(errors="replace")


async def mem_available(client: Agent) -> int | None:
    """The guest's MemAvailable in bytes (from /proc/meminfo); None when it cannot be read."""
    text = await read_file(client, GUEST_MEMINFO)
    return None if text is None else parse_mem_available(text)


def parse_mem_available(meminfo: str) -> int | None:
    """``MemAvailable:  1234 kB`` → bytes."""
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if key == "MemAvailable":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024
    return None
