"""Reading a node_exporter textfile the daemon wrote (``metrics.textfile``)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """The samples of one textfile, looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    @classmethod
    def read(cls, path: Path) -> Samples:
        return cls(path.read_text())

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these labels (among others); 0 when absent."""
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include these."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
