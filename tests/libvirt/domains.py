"""Domain XML for the libvirt tests and bench: a TCG domain booting the guest harness's kernel and initramfs.

The guest is the harness's (tests/vm/harness): this machine's ``/`` read-only over
9p (``hostroot``), a writable ``share``, the harness's control port (a virtio
serial port named ``ctl``) and qemu-guest-agent's port
(``org.qemu.guest_agent.0``), whose socket libvirt owns. DIMMs need ACPI,
``<maxMemory slots=...>`` and a NUMA cell; virtio-mem a NUMA cell too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

MiB = 1 << 20
GiB = 1 << 30
#: The namespace of the metadata element the tests select domains by.
METADATA_URI = "https://hotplugd.example/libvirt/1"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    workdir: Path  # ctl.sock, serial.log and the share live here
    kernel: Path
    initramfs: Path
    cmdline: str
    memory: int = 1 * GiB
    cpus: int = 2
    slots: int = 8
    max_memory: int = 64 * GiB
    virtio_mem: int = 0  # virtio-mem's maximum size (0: none)
    agent: bool = True
    metadata: str = ""  # text of a <hotplugd:select> element in METADATA_URI (empty: none)

    @property
    def ctl_socket(self) -> Path:
        return self.workdir / "ctl.sock"

    @property
    def share(self) -> Path:
        return self.workdir / "share"


def _kib(size: int) -> int:
    return size // 1024


def domain_xml(spec: DomainSpec) -> str:
    """The domain's XML (type qemu: TCG; direct kernel boot)."""
    path = quoteattr
    metadata = (f"<metadata><hotplugd:select xmlns:hotplugd={quoteattr(METADATA_URI)}>{escape(spec.metadata)}"
                f"</hotplugd:select></metadata>") if spec.metadata else ""
    agent = ("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
             if spec.agent else "")
    vmem = ""
    if spec.virtio_mem:
        vmem = (f"<memory model='virtio-mem'><target><size unit='KiB'>{_kib(spec.virtio_mem)}</size><node>0</node>"
                f"<block unit='KiB'>2048</block><requested unit='KiB'>0</requested></target></memory>")
    return f"""<domain type='qemu'>
  <name>{escape(spec.name)}</name>
  {metadata}
  <maxMemory slots='{spec.slots}' unit='KiB'>{_kib(spec.max_memory)}</maxMemory>
  <memory unit='KiB'>{_kib(spec.memory)}</memory>
  <vcpu>{spec.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(spec.kernel))}</kernel>
    <initrd>{escape(str(spec.initramfs))}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model>
    <numa><cell id='0' cpus='0-{spec.cpus - 1}' memory='{_kib(spec.memory)}' unit='KiB'/></numa>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount' accessmode='passthrough' multidevs='remap'>
      <source dir='/'/><target dir='hostroot'/><readonly/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough' multidevs='remap'>
      <source dir={path(str(spec.share))}/><target dir='share'/>
    </filesystem>
    <serial type='file'><source path={path(str(spec.workdir / 'serial.log'))}/><target port='0'/></serial>
    <channel type='unix'><source mode='bind' path={path(str(spec.ctl_socket))}/>
      <target type='virtio' name='ctl'/></channel>
    {agent}
    <memballoon model='none'/>
    {vmem}
  </devices>
</domain>
"""


def dimm_xml(size: int, node: int = 0) -> str:
    """A pc-dimm for ``virsh attach-device`` / ``attachDeviceFlags``."""
    return (f"<memory model='dimm'><target><size unit='KiB'>{_kib(size)}</size><node>{node}</node></target>"
            f"</memory>")
