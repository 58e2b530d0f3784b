"""``[plugins.libvirt]``: validated like every plugin table, each problem naming its key; the selection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hotplugd import ConfigError, ConfigProblem
from hotplugd_libvirt import Settings, parse
from hotplugd_libvirt.settings import DEFAULT_URI

URI = "https://hotplugd.example/select"


def problems(table: dict) -> dict[str, str]:
    found: list[ConfigProblem] = []
    parse(table, found)
    return {p.key: p.message for p in found}


def test_defaults_and_a_full_table() -> None:
    assert parse({"domains": ["vm1"]}) == Settings(domains=("vm1",))
    assert Settings().uri == DEFAULT_URI == "qemu:///system"
    settings = parse({"uri": "qemu+unix:///system?socket=/run/x.sock", "domains": "web-*", "metadata": URI,
                      "exclude": ["web-db"], "timeout": "2s", "parallel_domains": 2, "max_threads": 8})
    assert settings.domains == ("web-*",) and settings.exclude == ("web-db",) and settings.timeout == 2.0


def test_every_problem_names_its_key() -> None:
    assert problems({"domains": ["a"], "urii": "x"}) == {
        "plugins.libvirt.urii": "unknown key"}
    found = problems({"uri": "system", "domains": ["has space"], "metadata": "plain", "timeout": "0.5s",
                      "concurrency": 0, "max_batch": 0, "verify": "yes"})
    assert set(found) == {f"plugins.libvirt.{k}" for k in
                          ("uri", "domains", "metadata", "timeout", "concurrency", "max_batch", "verify")}
    assert "between 1.0" in found["plugins.libvirt.timeout"]  # libvirt takes whole seconds
    assert problems({"domains": ["a"], "reconnect_interval": "10s", "reconnect_max": "1s"}) == {
        "plugins.libvirt.reconnect_max": "is shorter than reconnect_interval"}


def test_the_backend_needs_a_selection_but_a_table_alone_does_not() -> None:
    assert problems({}) == {"plugins.libvirt.domains": "no domain selected"}
    found: list[ConfigProblem] = []
    parse({}, found, require_selection=False)
    assert found == []
    with pytest.raises(ConfigError, match=r"plugins.libvirt.domains: no domain selected"):
        parse({})


@pytest.mark.parametrize(("name", "metadata", "selected"), [
    ("vm1", None, True),  # by name
    ("web-3", None, True),  # by glob
    ("web-db", None, False),  # excluded, though the glob matches
    ("other", None, False),
    ("other", f'<select xmlns="{URI}">yes</select>', True),  # by its metadata element
    ("other", f'<select xmlns="{URI}">off</select>', False),
    ("other", f'<select xmlns="{URI}"/>', False),
    ("web-db", f'<select xmlns="{URI}">yes</select>', False),  # exclude wins
])
def test_selection(name: str, metadata: str | None, selected: bool) -> None:
    settings = parse({"domains": ["vm1", "web-*"], "exclude": ["web-db"], "metadata": URI})
    assert settings.selects(name, metadata) is selected


def test_the_cli_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hotplugd.toml"
    config.write_text('backend = "libvirt"\n[plugins.libvirt]\ndomains = ["vm1"]\nreconect_max = "5s"\n')
    done = subprocess.run([sys.executable, "-m", "hotplugd.commands.cli", "check-config", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "plugins.libvirt.reconect_max: unknown key" in done.stderr


def test_without_libvirt_python_only_the_libvirt_backend_is_refused(tmp_path: Path) -> None:
    """A missing binding is a configuration error (78) when --backend libvirt is chosen, nothing otherwise."""
    config = tmp_path / "hotplugd.toml"
    config.write_text('[plugins.libvirt]\ndomains = ["vm1"]\n')
    script = ("import sys; sys.modules['libvirt'] = None; sys.modules['libvirt_qemu'] = None; "
              "from hotplugd.commands.cli import main; sys.exit(main(sys.argv[1:]))")
    refused = subprocess.run([sys.executable, "-c", script, "check", "-c", str(config), "--backend", "libvirt"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 78, refused.stderr
    assert 'backend "libvirt" needs libvirt-python' in refused.stderr and "libvirt-dev" in refused.stderr
    listed = subprocess.run([sys.executable, "-c", script, "plugins"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "qga" in listed.stdout and "libvirt" in listed.stdout
