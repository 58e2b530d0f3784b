"""Where the provisioned VM ingredients are (``.vm/`` of the project), and whether they are there."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from . import initramfs
from .errors import NotProvisioned

HINT = "run scripts/provision-vm to enable"


def project_root() -> Path:
    """The checkout this harness belongs to (``tests/vm/harness/`` is three levels down)."""
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Assets:
    """The files a guest boots from."""

    qemu: Path
    kernel: Path
    initramfs: Path
    project: Path

    @property
    def agent(self) -> Path:
        """The guest agent's script, seen at the same path inside the guest."""
        return self.project / "tests" / "vm" / "harness" / "agent.py"


def find_assets(root: Path | None = None) -> Assets:
    """Locate QEMU, the unpacked kernel and a fresh initramfs, or raise :class:`NotProvisioned`."""
    root = root or project_root()
    vm = root / ".vm"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise NotProvisioned(f"qemu-system-x86_64 is not installed: {HINT}")
    kernels = sorted((vm / "kernel" / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise NotProvisioned(f"no guest kernel at {vm}/kernel/boot/vmlinuz-*: {HINT}")
    cpio = vm / "initramfs.cpio"
    if not cpio.is_file():
        raise NotProvisioned(f"no initramfs at {cpio}: {HINT}")
    if not initramfs.is_fresh(vm / "kernel", cpio):
        raise NotProvisioned(f"{cpio} is older than tests/vm/harness/initramfs.py: {HINT}")
    return Assets(qemu=Path(qemu), kernel=kernels[-1], initramfs=cpio, project=root)
