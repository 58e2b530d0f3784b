"""config/hotplugd.toml's [plugins.simulated] shows every key of the simulated host with its real default."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from hotplugd_simulated.settings import Settings, parse

CONFIG = Path(__file__).resolve().parents[2] / "config" / "hotplugd.toml"


def section() -> tuple[str, set[str]]:
    """The commented-out keys of [plugins.simulated], uncommented (prose lines left out), and the keys shown
    unset (``# key =``: a default that depends on others)."""
    text = CONFIG.read_text()
    body = text.split("[plugins.simulated]\n", 1)[1].split("\n[plugins.", 1)[0]
    lines, unset = [], set()
    for line in body.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line)  # the trailing comment
        match = re.match(r"# (\[\[plugins\.simulated\.scenario\]\]|([a-z_]+) =(.*))$", line)
        if match and match.group(2) and not match.group(3).strip():
            unset.add(match.group(2))
        elif match:
            lines.append(match.group(1))
    return "\n".join(lines), unset


def test_every_key_is_shown_with_its_real_default():
    text, unset = section()
    table = tomllib.loads("[plugins.simulated]\n" + text)["plugins"]["simulated"]
    keys = {f.name for f in dataclasses.fields(Settings)}
    shown = set(table) | unset
    assert shown == keys, f"missing {sorted(keys - shown)}, unknown {sorted(shown - keys)}"
    assert all(getattr(Settings(), key) is None for key in unset)
    problems: list = []
    assert parse(table, problems) == Settings()
    assert problems == []
