"""``hotplugd install-files``: every plugin says what it installs (``hotplugd_install_files``), the command writes
it under ``--root`` and says each step; ``systemd/install.py`` runs it (tests/systemd/test_install.py)."""

from __future__ import annotations

from pathlib import Path

from hotplugd.commands.cli import main

from .fakes import Installed

PINNING = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_install_files(files, config):
    dropin = files.unit_dir / "hotplugd.service.d" / "30-pinning.conf"
    stale = files.under("/etc/pinning/old.conf")
    if files.uninstall:
        files.remove(dropin)
        return
    files.say(f"features {{sorted(files.features)}}, skipping {{sorted(files.skip)}}")
    if config.plugins.get("{name}", {{}}).get("enabled") or "pinning" in files.features:
        files.write(dropin, "[Service]\\nLimitMEMLOCK=infinity\\n", said=f"pinned by {{dropin}}",
                    reload=("false",))
    files.remove(stale, said=f"removed stale {{stale}}")

@hookimpl
def hotplugd_check_config(plugins):
    return []
"""

RAISES = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_install_files(files):
    raise RuntimeError("no idea where the firmware lives")
"""


def dropin(root: Path) -> Path:
    return root / "etc/systemd/system/hotplugd.service.d/30-pinning.conf"


def test_each_plugins_steps_are_done_under_the_root_and_said(installed: Installed, tmp_path: Path, capsys):
    installed.add("pinning", PINNING)
    root = tmp_path / "stage"
    config = root / "etc/hotplugd/hotplugd.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[plugins.pinning]\nenabled = true\n")
    config.chmod(0o644)
    (root / "etc/pinning").mkdir()
    (root / "etc/pinning/old.conf").write_text("x\n")
    assert main(["install-files", "--root", str(root), "--with", "cxl", "--without", "udev"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["features ['cxl'], skipping ['udev']", f"pinned by {dropin(root)}",
                   f"removed stale {root}/etc/pinning/old.conf"]  # no reload: the root is not this machine's
    assert dropin(root).read_text() == "[Service]\nLimitMEMLOCK=infinity\n"
    assert dropin(root).stat().st_mode & 0o777 == 0o644 and not (root / "etc/pinning/old.conf").exists()
    # The config no longer asks for it: the next run writes nothing, and says nothing of a file already gone.
    config.write_text("[plugins.pinning]\nenabled = false\n")
    assert main(["install-files", "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == ["features [], skipping []"]
    assert main(["install-files", "--root", str(root), "--uninstall"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed {dropin(root)}"] and not dropin(root).exists()


def test_a_plugin_that_raises_stops_everything_before_a_file_is_written(installed: Installed, tmp_path, capsys):
    installed.add("pinning", PINNING)
    installed.add("firmware", RAISES)
    assert main(["install-files", "--root", str(tmp_path), "--with", "pinning"]) == 78
    err = capsys.readouterr().err
    assert "plugin 'firmware' failed in hotplugd_install_files: RuntimeError: no idea" in err
    assert not dropin(tmp_path).exists()


def test_a_file_that_cannot_be_written_is_named_and_the_rest_done(installed: Installed, tmp_path, capsys):
    installed.add("pinning", PINNING)
    dropin(tmp_path).mkdir(parents=True)  # any write fails (EISDIR)
    (tmp_path / "etc/pinning").mkdir()
    (tmp_path / "etc/pinning/old.conf").write_text("x\n")
    assert main(["install-files", "--root", str(tmp_path), "--with", "pinning"]) == 1
    out = capsys.readouterr().out
    assert f"cannot write {dropin(tmp_path)} (plugin pinning): Is a directory" in out
    assert "removed stale" in out and not (tmp_path / "etc/pinning/old.conf").exists()


def test_a_relative_root_is_refused(capsys):
    assert main(["install-files", "--root", "stage"]) == 78
    assert "--root 'stage': an absolute path is needed" in capsys.readouterr().err
