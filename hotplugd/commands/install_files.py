"""``hotplugd install-files``: what the plugins install beside hotplugd's units, written or removed, each step said.

``systemd/install.py`` runs it with the very hotplugd it installs the units for, so the plugins
that service will load say what they need (``hotplugd_install_files``): files to write (a
drop-in granting what a plugin's work needs, a copy masking another onliner's rules) or to
remove (what an earlier install wrote and the config no longer needs), and what they found
and left alone. With ``--uninstall`` they say what to remove of what they wrote. It writes
under ``--root`` only; on a live install (root ``/``) it then runs the reloads the steps ask
for, each once.

Exit 0: done; 1: a file could not be written or removed (named; the other steps are done);
2: usage error; 78: the config or a plugin is wrong (nothing is written).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from hotplugd.config import Config
from hotplugd.errors import EXIT_FAILURE
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.installing import InstallFiles, InstallStep


def under(root: Path, path: str | Path) -> Path:
    """``path`` of the installed system under ``root``."""
    return root / str(path).lstrip("/")


def _apply(step: InstallStep) -> bool:
    """Carry out one step; False when there was nothing to do (a file to remove that is not there)."""
    assert step.path is not None
    if step.text is None:
        if not step.path.exists() and not step.path.is_symlink():
            return False
        step.path.unlink()
        return True
    step.path.parent.mkdir(parents=True, exist_ok=True)
    step.path.write_text(step.text)
    os.chmod(step.path, 0o644)
    return True


def install_files(config: Config, hooks: Hooks, root: Path, unit_dir: str | Path, features: Sequence[str] = (),
                  skip: Sequence[str] = (), *, uninstall: bool = False, say: Callable[[str], None] = print) -> int:
    """Ask every plugin what it installs (or, ``uninstall``, removes), then do it and say each step."""
    files = InstallFiles(root, under(root, unit_dir), features, skip, uninstall=uninstall)
    hooks.install_files(files, config)
    failed = False
    reloads: list[tuple[str, ...]] = []
    for step in files.steps:
        if step.path is None:
            say(step.said)
            continue
        try:
            done = _apply(step)
        except OSError as exc:
            failed = True
            say(f"cannot {'remove' if step.text is None else 'write'} {step.path} (plugin {step.plugin}): "
                f"{exc.strerror or exc}")
            continue
        if done:
            say(step.said)
            if step.reload and step.reload not in reloads:
                reloads.append(step.reload)
    if root.resolve() == Path("/"):
        for argv in reloads:
            say("$ " + shlex.join(argv))
            subprocess.run(argv, check=False)
    return EXIT_FAILURE if failed else 0
