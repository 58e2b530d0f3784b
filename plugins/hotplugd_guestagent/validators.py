"""What the guest backends' config tables share beyond hotplugd's own parsers (``hotplugd.whole``...).

Each backend names its guests its own way (``qga``: ``[[plugins.qga.guest]]`` and
``guest_dirs``; ``libvirt``: ``domains`` and ``metadata``), but a guest's name is
the same thing in both (a domain of the core, a metrics label, a log field:
:func:`name_problem`), and the table as a whole is checked alike
(:func:`fleet_problems`: a guest list when the backend is chosen, a backoff
that can double).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hotplugd import ConfigProblem, whole

if TYPE_CHECKING:
    from .link import LinkOptions

#: Blocks one guest kernel may online at once: beyond this is a typo.
MAX_GUEST_CONCURRENCY = 256


def concurrency(value: Any) -> int:
    """Blocks one guest's kernel onlines at once (no longer the number of guests: that is ``parallel_guests``)."""
    if value == 0 and not isinstance(value, bool):
        raise ValueError("0 is no longer allowed: concurrency is per guest (blocks its kernel onlines at once, "
                         "1 on mainline); guests in parallel are parallel_guests")
    return whole(1, MAX_GUEST_CONCURRENCY)(value)


def name_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a guest's name (or a glob of names), or None: a guest's name is a domain
    of the core, a metrics label and a log field, so it is a non-empty string without white space."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return f"expected a non-empty name without spaces, got {value!r}"
    return None


def fleet_problems(settings: LinkOptions, prefix: str, unnamed: ConfigProblem | None = None) -> list[ConfigProblem]:
    """The problems of a guest backend's table ``prefix`` as a whole: ``unnamed`` (the backend is chosen and the
    table names no guest; None: it names some, or the backend is not chosen), then a backoff that cannot double
    (``reconnect_max`` shorter than ``reconnect_interval``)."""
    out = [] if unnamed is None else [unnamed]
    if settings.reconnect_max < settings.reconnect_interval:
        out.append(ConfigProblem(f"{prefix}.reconnect_max", "is shorter than reconnect_interval",
                                 "the wait starts at reconnect_interval and doubles up to reconnect_max"))
    return out
