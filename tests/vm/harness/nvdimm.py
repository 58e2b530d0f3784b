"""NVDIMMs on a memory-only NUMA node, and the tools to make devdax devices of them (``docs/facts/DAX.md``).

::

    config = GuestConfig(memory="2G", slots=4, maxmem="8G", virtio_mem=False,
                         qemu_args=nvdimm_args([workdir / "nv1"], memory="2G", cpus=2))
    guest = Guest(config).start()
    tools = DaxTools.find(guest.assets.project)
    tools.load_modules(guest)                       # nfit nd_pmem dax_pmem device_dax kmem
    tools.devdax(guest, "namespace0.0")             # ndctl create-namespace -m devdax: dax0.0

The tools are Debian's ndctl, daxctl and kmod, unpacked by ``scripts/provision-vm`` into
``.vm/dax-tools`` (never installed), seen by the guest through the shared root.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import HINT
from .client import CommandResult
from .errors import NotProvisioned
from .guest import Guest

#: The modules, in load order (modprobe resolves each one's own dependencies).
DAX_MODULES = ("nfit", "nd_pmem", "dax_pmem", "device_dax", "kmem")


def nvdimm_args(backing: Sequence[Path], *, size: str = "2G", node: int = 1, memory: str = "2G",
                cpus: int = 2) -> tuple[str, ...]:
    """QEMU options: node 0 with the CPUs and ``memory``, memory-less node ``node``, one NVDIMM on it per file.

    Each backing file is sparse (QEMU creates it); each NVDIMM takes a DIMM slot and counts against ``maxmem``.
    """
    args = ["-machine", "nvdimm=on", "-object", f"memory-backend-ram,id=m0,size={memory}",
            "-numa", f"node,nodeid=0,cpus=0-{cpus - 1},memdev=m0", "-numa", f"node,nodeid={node}"]
    for i, path in enumerate(backing, start=1):
        args += ["-object", f"memory-backend-file,id=nv{i},share=on,mem-path={path},size={size}",
                 "-device", f"nvdimm,memdev=nv{i},id=nvdimm{i},node={node}"]
    return tuple(args)


@dataclass(frozen=True)
class DaxTools:
    """ndctl, daxctl and modprobe unpacked under ``.vm/dax-tools``, run in a guest."""

    root: Path
    kernel: Path  # the unpacked kernel package, indexed by depmod

    @classmethod
    def find(cls, project: Path) -> DaxTools:
        tools = cls(project / ".vm" / "dax-tools", project / ".vm" / "kernel")
        for path in (tools.ndctl, tools.daxctl, tools.modprobe):
            if not path.exists():
                raise NotProvisioned(f"{path} is missing: {HINT}")
        if not any(tools.kernel.glob("lib/modules/*/modules.dep")):
            raise NotProvisioned(f"no modules.dep under {tools.kernel}: {HINT}")
        return tools

    @property
    def ndctl(self) -> Path:
        return self.root / "usr/bin/ndctl"

    @property
    def daxctl(self) -> Path:
        return self.root / "usr/bin/daxctl"

    @property
    def modprobe(self) -> Path:
        return self.root / "run/modprobe"

    @property
    def env(self) -> dict[str, str]:
        return {"LD_LIBRARY_PATH": str(self.root / "usr/lib/x86_64-linux-gnu")}

    def load_modules(self, guest: Guest, modules: Sequence[str] = DAX_MODULES) -> None:
        for module in modules:
            guest.agent.run([str(self.modprobe), "-d", str(self.kernel), module], timeout=60)

    def run(self, guest: Guest, tool: Path, *args: str, timeout: float = 120, check: bool = True) -> CommandResult:
        return guest.agent.run([str(tool), *args], env=self.env, timeout=timeout, check=check)

    def devdax(self, guest: Guest, namespace: str) -> dict[str, Any]:
        """``ndctl create-namespace -f -e NAMESPACE -m devdax``: its JSON (``daxregion.devices[0].chardev``)."""
        out = self.run(guest, self.ndctl, "create-namespace", "-f", "-e", namespace, "-m", "devdax").stdout
        return dict(json.loads(out))
