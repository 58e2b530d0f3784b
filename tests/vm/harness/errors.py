"""The harness's exceptions: one family, each message naming the file or command at fault."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every error raised by the VM test harness."""


class NotProvisioned(HarnessError):
    """QEMU, the guest kernel or the initramfs is missing: run ``scripts/provision-vm``."""


class GuestError(HarnessError):
    """The guest failed to boot, died, or stopped answering."""


class QMPError(HarnessError):
    """QEMU's monitor refused a command or could not be reached."""


class AgentError(HarnessError):
    """The guest agent reported an error for a request."""

    def __init__(self, method: str, kind: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"guest agent {method!r} failed: {kind}: {message}")
        self.method = method
        self.kind = kind
        self.remote_traceback = remote_traceback
