"""hotplugd: online hot-added memory fast, safely and observably.

The public API for plugin authors is exactly ``__all__``.
"""

from importlib.metadata import PackageNotFoundError, version

from hotplugd.config import Config
from hotplugd.errors import BackendError, ConfigError, HotplugdError, PluginError
from hotplugd.model import (
    EHWPOISON,
    HOST_DOMAIN,
    KERNEL_ZONES,
    KNOB_NAMES,
    Action,
    Block,
    BlockEvent,
    BlockReport,
    Executor,
    KernelKnobs,
    NodeLedger,
    OnlineResult,
    Outcome,
    PhaseInfo,
    Rescan,
    RescanReason,
    Scan,
    State,
    Topology,
    Trigger,
    ZoneRequest,
    narrow,
    zone_matches,
)
from hotplugd.plugin.backend import Backend, BackendRegistry, BackendSubject, HostBackend
from hotplugd.plugin.commands import CommandContext, CommandRegistry, DaemonSession, PlanSummary
from hotplugd.plugin.installing import InstallFiles
from hotplugd.plugin.spec import hookimpl
from hotplugd.schema import (
    ConfigProblem,
    OutOfBounds,
    boolean,
    describe_table,
    duration,
    nested,
    number,
    one_of,
    read_table,
    setting,
    size,
    string_list,
    tables_of,
    text,
    whole,
)
from hotplugd.units import format_bytes, parse_cpulist, parse_duration, parse_size

try:
    __version__ = version("hotplugd")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "EHWPOISON",
    "HOST_DOMAIN",
    "KNOB_NAMES",
    "KERNEL_ZONES",
    "Action",
    "Backend",
    "BackendError",
    "BackendRegistry",
    "BackendSubject",
    "Block",
    "BlockEvent",
    "BlockReport",
    "CommandContext",
    "CommandRegistry",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DaemonSession",
    "Executor",
    "HostBackend",
    "HotplugdError",
    "InstallFiles",
    "KernelKnobs",
    "OnlineResult",
    "NodeLedger",
    "Outcome",
    "PhaseInfo",
    "PlanSummary",
    "PluginError",
    "Rescan",
    "RescanReason",
    "Scan",
    "State",
    "Topology",
    "Trigger",
    "ZoneRequest",
    "OutOfBounds",
    "__version__",
    "boolean",
    "describe_table",
    "duration",
    "format_bytes",
    "hookimpl",
    "narrow",
    "nested",
    "number",
    "one_of",
    "parse_cpulist",
    "parse_duration",
    "parse_size",
    "read_table",
    "setting",
    "size",
    "string_list",
    "tables_of",
    "text",
    "whole",
    "zone_matches",
]
