"""User-facing errors: one family, printed without a traceback, mapped to an exit code."""

from __future__ import annotations

#: sysexits' EX_CONFIG; the systemd unit sets ``RestartPreventExitStatus=78``.
EXIT_CONFIG = 78
EXIT_FAILURE = 1


class HotplugdError(Exception):
    """An error the user can act on. ``str()`` is the whole message."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(HotplugdError):
    """A configuration file, key or value is wrong."""

    exit_code = EXIT_CONFIG


class PluginError(HotplugdError):
    """A plugin failed to load, or implements a hook that does not exist."""

    exit_code = EXIT_CONFIG


class BackendError(HotplugdError):
    """A backend cannot work at all (e.g. no permission to write the state files)."""
