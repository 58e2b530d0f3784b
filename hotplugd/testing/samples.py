"""Reading a metric's value in a test, as prometheus client_python's own tests do."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry


class HasRegistry(Protocol):
    registry: CollectorRegistry


def sample(metrics: HasRegistry | CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of sample ``name`` with ``labels`` on the daemon's registry; 0 when absent."""
    registry = metrics if isinstance(metrics, CollectorRegistry) else metrics.registry
    return registry.get_sample_value(name, labels or {}) or 0.0
