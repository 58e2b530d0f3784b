"""What plugins install beside hotplugd's units: the ``hotplugd_install_files`` hook's registry.

``hotplugd install-files`` (run by ``systemd/install.py``) hands every plugin one
:class:`InstallFiles`; each says what it writes, removes or reports, and the command
carries it out in order, printing each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class InstallStep:
    """One step a plugin asked for: write ``text`` to ``path`` (None: remove it where present), or only
    ``say`` something (no path)."""

    plugin: str
    path: Path | None
    text: str | None
    said: str
    reload: tuple[str, ...] = ()


class InstallFiles:
    """Where plugins say what they install (``hotplugd_install_files``): ``files.write(path, text)``,
    ``files.remove(path)``, ``files.say(message)``.

    ``root`` is the install root (``/``, or a staging tree: ``install.py --destdir``); ``unit_dir``
    the directory ``hotplugd.service`` is installed in, already under ``root`` (a drop-in goes in
    ``unit_dir / "hotplugd.service.d"``); ``features`` what the operator asked to install ahead of the
    config naming it (``install.py --with NAME``); ``skip`` what the operator asked to leave alone
    (``--without NAME``); ``uninstall``: say what to remove of what you install.
    """

    def __init__(self, root: Path, unit_dir: Path, features: Sequence[str] = (), skip: Sequence[str] = (), *,
                 uninstall: bool = False) -> None:
        self.root = root
        self.unit_dir = unit_dir
        self.features = frozenset(features)
        self.skip = frozenset(skip)
        self.uninstall = uninstall
        self.steps: list[InstallStep] = []
        self._plugin = "?"

    def _registering_for(self, plugin: str) -> None:
        self._plugin = plugin

    def under(self, path: str | Path) -> Path:
        """``path`` of the installed system (``/etc/udev/rules.d``) under :attr:`root`."""
        return self.root / str(path).lstrip("/")

    def write(self, path: Path, text: str, said: str = "", reload: Sequence[str] = ()) -> None:
        """Write ``text`` to ``path`` (under :attr:`root`; parents made, mode 0644, root's own). ``said`` is
        printed once done (default ``wrote PATH``); ``reload``: a command to run after every step on a live
        install (root ``/``), once however many steps name it (``("udevadm", "control", "--reload")``)."""
        self.steps.append(InstallStep(self._plugin, path, text, said or f"wrote {path}", tuple(reload)))

    def remove(self, path: Path, said: str = "", reload: Sequence[str] = ()) -> None:
        """Remove ``path`` where it exists (nothing is said where it does not); ``said`` as for :meth:`write`."""
        self.steps.append(InstallStep(self._plugin, path, None, said or f"removed {path}", tuple(reload)))

    def say(self, message: str) -> None:
        """Print ``message`` among the steps (what was found and left alone)."""
        self.steps.append(InstallStep(self._plugin, None, None, message))
