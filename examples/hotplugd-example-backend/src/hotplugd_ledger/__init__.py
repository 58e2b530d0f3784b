"""hotplugd-example-backend: the ``ledger`` backend and a kernel-first zone policy for hotplugd.

The hook implementations are in :mod:`hotplugd_ledger.plugin`, the module the
``hotplugd`` entry point names.
"""

from .backend import LedgerBackend
from .hostfile import HostFile
from .options import Options

__all__ = ["HostFile", "LedgerBackend", "Options"]
