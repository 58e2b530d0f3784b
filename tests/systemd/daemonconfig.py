"""Config files for a daemon on the simulated backend with slow, serialised onlines."""

from __future__ import annotations

import socket
from pathlib import Path

#: Blocks present but offline at start (coldplug): 1 GiB of 128 MiB blocks on one node.
COLDPLUG_BLOCKS = 8

#: Deferral bounds that never start a phase by themselves: blocks wait until told otherwise.
HOLD = {"defer": '"always"', "settle": "3600", "max_defer": "3600", "max_offline_bytes": '"1TiB"',
        "max_memmap_share": "1.0"}


def config_text(*, cost: str = "400ms", log_level: str = "info", metrics_port: int | None = None,
                scheduler: dict[str, str] | None = None, zones: str = "auto", extra: str = "") -> str:
    """A TOML config: simulated host, one node, ``COLDPLUG_BLOCKS`` offline blocks, ``cost`` per online."""
    # hotplugd onlines (the simulated kernel has the real knobs, and would otherwise take the coldplug blocks)
    sched = {"parallel_hotplug_ratio": "1.0", "onliner": '"hotplugd"', **(scheduler or {})}
    metrics = (f"enabled = true\naddress = \"127.0.0.1\"\nport = {metrics_port}" if metrics_port is not None
               else "enabled = false")
    return f"""backend = "simulated"
log_level = "{log_level}"
log_format = "json"
{extra}
[scheduler]
{chr(10).join(f"{k} = {v}" for k, v in sched.items())}

[zones]
policy = "{zones}"

[metrics]
{metrics}

[plugins.simulated]
nodes = 1
cpus_per_node = 2
boot_memory = "1GiB"
offline_at_start = "{COLDPLUG_BLOCKS * 128}MiB"
lock = "global"
cost_fixed = "{cost}"
cost_init_per_page = "0s"
cost_free_per_page = "0s"
scenario = []
"""


def write_config(path: Path, **kwargs: object) -> Path:
    path.write_text(config_text(**kwargs))  # type: ignore[arg-type]
    path.chmod(0o644)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
