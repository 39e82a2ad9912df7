"""Class-incremental continual learning with distilled memories (paper Sec. 5.5, Table 7).

``config`` (the typed ``ContinualConfig``), ``split`` (class order, phases, the data a
phase may see), ``memory`` (one phase's memory from one builder), ``executor`` (every
memory, here or as Ray tasks), ``evaluate`` (per-phase evaluation on the seen classes),
``report`` (continual.json / .csv / .png, report.md), ``layout`` (the run directory).
"""

from pdd_ray.continual.config import BuilderConfig, ContinualConfig
from pdd_ray.continual.split import PhaseSplit, phase_bundle

__all__ = ["BuilderConfig", "ContinualConfig", "PhaseSplit", "phase_bundle"]
