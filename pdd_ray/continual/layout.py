"""``ContinualDir``: every path of a continual run directory, in one place.

    OUT/memories/<builder>/phase_<t>/            the phase's memory builder run (a PDD run directory for a
                                                 distillation builder: experts/, stages/, synthetic/)
    OUT/memories/<builder>/phase_<t>/memory.json what the memory is (builder, classes, settings) and whether
                                                 it is finished; a finished memory is never rebuilt
    OUT/memories/<builder>/phase_<t>/synthetic/  the memory itself (synthetic-set format, phase labels)
    OUT/evaluation/<builder>/phase_<t>.json      the evaluation after phase t (memory of phases 1..t)
    OUT/continual.json, continual.csv, continual.png, report.md

Phase indices are 0-based in the code, 1-based on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ContinualDir:
    """The paths of one continual run directory."""

    root: Path

    @classmethod
    def of(cls, config) -> "ContinualDir":
        """The run directory of a ``ContinualConfig``."""
        return cls(Path(config.out))

    def phase(self, builder: str, phase: int) -> Path:
        """Where ``builder`` builds phase ``phase``'s memory (the ``out`` of its run)."""
        return self.root / "memories" / builder / f"phase_{phase + 1}"

    def marker(self, builder: str, phase: int) -> Path:
        return self.phase(builder, phase) / "memory.json"

    def memory(self, builder: str, phase: int) -> Path:
        """The memory's synthetic-set directory (``RunDir.synthetic`` of a distillation builder's run)."""
        return self.phase(builder, phase) / "synthetic"

    def evaluation(self, builder: str, phase: int) -> Path:
        return self.root / "evaluation" / builder / f"phase_{phase + 1}.json"

    @property
    def results(self) -> Path:
        return self.root / "continual.json"

    @property
    def table(self) -> Path:
        return self.root / "continual.csv"

    @property
    def plot(self) -> Path:
        return self.root / "continual.png"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


__all__ = ["ContinualDir"]
