"""Command line of :mod:`.initramfs`, run by ``scripts/provision-vm``::

    PYTHONPATH=tests/vm python3 -m harness.mkinitramfs --kernel-dir .vm/kernel \\
        --busybox /bin/busybox --out .vm/initramfs.cpio --if-stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import NotProvisioned
from .initramfs import build, is_fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.mkinitramfs",
                                     description="Build the VM tests' initramfs.")
    parser.add_argument("--kernel-dir", type=Path, required=True, help="the unpacked kernel package (dpkg -x)")
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"), help="a static busybox")
    parser.add_argument("--out", type=Path, required=True, help="the cpio file to write")
    parser.add_argument("--if-stale", action="store_true", help="do nothing when OUT is up to date")
    args = parser.parse_args(argv)
    try:
        if args.if_stale and is_fresh(args.kernel_dir, args.out):
            return 0
        build(args.kernel_dir, args.busybox, args.out)
    except (NotProvisioned, OSError) as exc:
        print(f"mkinitramfs: error: {exc}", file=sys.stderr)
        return 1
    print(f"mkinitramfs: wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
