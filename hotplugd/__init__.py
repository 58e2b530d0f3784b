"""hotplugd: online hot-added memory fast, safely and observably.

The public API for plugin authors is exactly ``__all__``.
"""

from importlib.metadata import PackageNotFoundError, version

from .backend import Backend, BackendRegistry
from .config import Config, ConfigProblem
from .errors import BackendError, ConfigError, HotplugdError, PluginError
from .hookspecs import hookimpl
from .model import (
    HOST_DOMAIN,
    Action,
    Block,
    BlockEvent,
    BlockReport,
    OnlineResult,
    Outcome,
    PhaseInfo,
    Rescan,
    Scan,
    State,
    Topology,
    ZoneRequest,
)

try:
    __version__ = version("hotplugd")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "HOST_DOMAIN",
    "Action",
    "Backend",
    "BackendError",
    "BackendRegistry",
    "Block",
    "BlockEvent",
    "BlockReport",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "HotplugdError",
    "OnlineResult",
    "Outcome",
    "PhaseInfo",
    "PluginError",
    "Rescan",
    "Scan",
    "State",
    "Topology",
    "ZoneRequest",
    "__version__",
    "hookimpl",
]
