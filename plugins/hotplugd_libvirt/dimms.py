"""A hot-added DIMM's blocks from the domain's XML, onlined without listing the guest.

libvirt raises ``DEVICE_ADDED`` (naming the DIMM's backend object, ``memdimm0``)
as soon as QEMU has the device, before the guest has handled its ACPI
notification and created the blocks; it does not pass QEMU's ``ACPI_DEVICE_OST``
on, which is how the ``qga`` backend knows they exist. But the live domain XML
has the DIMM (``<memory model='dimm'>`` with alias ``dimm0``): its ``base``
address and size, hence its phys-indices, ``base // block_size`` to
``(base + size) // block_size - 1`` (blocks it covers whole). The kernel creates
a device's blocks in ascending order, all of them before it onlines (or lets
anyone online) the first, so once the last one's ``state`` file exists in the
guest (``guest-file-open``: one file, cheap for the guest, where a listing
reads two files per block) every block is there: they are announced as offline
``add`` events at once, in one burst, and the core's phase onlines them in one
``guest-set-memory-blocks``. A listing follows ``resize_quiet`` later as the
safety net. Anything missing (no XML match, the guest not listed yet, its agent
failing, its kernel onlining by itself, the last block not there within
``add_wait``) falls back to fast polling of the block list.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import ObjectSendStream, TaskGroup

from hotplugd import BlockEvent, Rescan
from hotplugd_guestagent.errors import AgentError, CommandFailed
from hotplugd_guestagent.link import AgentLink

from .hypervisor import HypervisorError

log = structlog.get_logger("hotplugd.libvirt")

#: Reads of the domain's XML before a DIMM not found in it is given up (the fast poll of the block list then).
XML_TRIES = 20
#: The prefix libvirt gives a DIMM's backend object in DEVICE_ADDED (``memdimm0`` for device ``dimm0``).
OBJECT_PREFIX = "mem"
_UNITS = {"b": 1, "bytes": 1, "kib": 1 << 10, "k": 1 << 10, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30,
          "g": 1 << 30, "tib": 1 << 40, "t": 1 << 40, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}


#: How libvirt names memory devices (a DEVICE_ADDED for a DIMM names its backend object: ``memdimm0``).
MEMORY_ALIASES = ("dimm", "nvdimm", "virtiomem", "virtiopmem", "memdimm", "memnvdimm", "memvirtiomem")


def is_memory_alias(alias: str) -> bool:
    """Whether a DEVICE_ADDED alias names a memory device (another device brings no blocks)."""
    return alias.startswith(MEMORY_ALIASES)


def is_dimm_added(alias: str) -> bool:
    return alias.startswith(f"{OBJECT_PREFIX}dimm")


def dimm_range(domain_xml: str, alias: str, block_size: int) -> range | None:
    """The phys-indices of the blocks the DIMM behind DEVICE_ADDED ``alias`` covers whole; None if unknown."""
    device = alias.removeprefix(OBJECT_PREFIX)
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    for memory in root.iterfind("./devices/memory[@model='dimm']"):
        name = memory.find("alias")
        if name is None or name.get("name") != device:
            continue
        address, size = memory.find("address"), memory.find("target/size")
        try:
            base = int(address.get("base", ""), 0) if address is not None else -1
            amount = int(size.text or "") * _UNITS[size.get("unit", "KiB").lower()] if size is not None else 0
        except (ValueError, KeyError):
            return None
        if base < 0 or amount <= 0:
            return None
        blocks = range(-(-base // block_size), (base + amount) // block_size)
        return blocks or None
    return None


async def block_exists(link: AgentLink, phys: int) -> bool:
    """Whether block ``phys`` exists in the guest: its ``state`` file opens (AgentError: cannot tell)."""
    path = f"/sys/devices/system/memory/memory{phys}/state"  # the guest's, opened read-only by its agent
    try:
        handle = await link.client.execute("guest-file-open", {"path": path, "mode": "r"})
    except CommandFailed:
        return False
    try:
        await link.client.execute("guest-file-close", {"handle": handle})
    except CommandFailed:
        pass
    return True


async def learn_dimm(link: AgentLink, alias: str, read_xml: Callable[[], Awaitable[str]],
                     send: ObjectSendStream[BlockEvent | Rescan], add_wait: float) -> None:
    """Announce the DIMM's blocks once the guest created them and list the guest once adding is over; or, when
    anything is missing, poll the block list fast (as for any memory device)."""
    options = link.options
    try:
        with anyio.move_on_after(add_wait):
            # libvirt raises DEVICE_ADDED before the device is in the live XML (measured: 20 ms before
            # attachDeviceFlags returned): read it again, a few times, until the DIMM is there
            for _ in range(XML_TRIES):
                blocks = dimm_range(await read_xml(), alias, link.block_size) if link.block_size else None
                if blocks is not None:
                    break
                await anyio.sleep(options.resize_poll_interval)
            else:
                log.info("libvirt_dimm_unknown", domain=link.name, device=alias, detail="not in the domain's XML")
                blocks = None
            if blocks is not None:
                while not await block_exists(link, blocks[-1]):
                    await anyio.sleep(options.resize_poll_interval)
                if await link.announce(blocks, send, alias):
                    await anyio.sleep(options.resize_quiet)
                    link.wake()  # the safety net, once adding is over
                    return
    except (AgentError, HypervisorError) as exc:  # the fallback below covers it
        log.info("libvirt_dimm_fallback", domain=link.name, device=alias, error=str(exc))
    link.memory_event(add_wait)


def start_learning(tasks: TaskGroup, send: ObjectSendStream[BlockEvent | Rescan], learning: set[tuple[str, str]],
                   link: AgentLink, alias: str, read_xml: Callable[[], Awaitable[str]], add_wait: float) -> bool:
    """:func:`learn_dimm` in a task of ``tasks`` (one per DIMM at a time: ``learning``); False when the guest
    cannot take it (not listed yet, its agent down, its kernel onlining by itself)."""
    key = (link.name, alias)
    if key in learning:
        return True
    if not link.can_announce:
        return False
    learning.add(key)

    async def learn(clone: ObjectSendStream[BlockEvent | Rescan]) -> None:
        try:
            async with clone:
                await learn_dimm(link, alias, read_xml, clone, add_wait)
        finally:
            learning.discard(key)

    tasks.start_soon(learn, send.clone())
    return True
