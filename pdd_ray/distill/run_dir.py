"""``RunDir``: every path of a PDD run directory, in one place.

    OUT/experts/stage_<i>/          expert buffers (stage 1: or the given ``buffer``)
    OUT/experts/stage_<i>.partition training positions of stage i's experts (forgetting curriculum)
    OUT/stages/stage_<i>.ckpt       the running stage's checkpoint
    OUT/stages/validation_starts_<k>.safetensors  validation nets after k stages (the next stage continues them)
    OUT/synthetic/                  the synthetic set, one stage appended as each finishes
    OUT/precision.json              the precision the run resolved (written as a stage starts; a resume keeps it)
    OUT/metrics.json, report.md, accuracy_vs_stage.png   the final evaluation
    OUT/ray_train/                  Ray Train's storage (data-parallel stages)

Stage indices are 0-based here, as everywhere in the code; names on disk are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pdd_ray.storage import resolve_input_dir


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (``config.out``), given the run's config."""

    root: Path
    buffer: str | None = None  # a given stage-1 buffer (path or URI) instead of OUT/experts/stage_1
    transitions: bool = True  # False: every stage matches the stage-1 experts

    @classmethod
    def of(cls, config) -> "RunDir":
        """The run directory of a ``DistillConfig``."""
        return cls(Path(config.out), config.buffer, config.stages.transitions)

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def precision(self) -> Path:
        """The precision the run resolved when it started (``pdd_ray.precision.record_precision``)."""
        return self.root / "precision.json"

    def stage_picture(self, index: int) -> Path:
        return self.synthetic / f"stage_{index + 1}.png"

    def experts(self, index: int) -> Path:
        """The expert buffer stage ``index`` matches against."""
        if index == 0 or not self.transitions:
            # A URI buffer (s3://, gs://, ...) is mirrored into the local cache once; later calls fetch nothing new.
            return resolve_input_dir(self.buffer) if self.buffer else self.root / "experts" / "stage_1"
        return self.root / "experts" / f"stage_{index + 1}"

    def partition(self, index: int) -> Path:
        return self.root / "experts" / f"stage_{index + 1}.partition"

    @property
    def stages(self) -> Path:
        """Per-stage working files: checkpoints, the validation nets' starts."""
        return self.root / "stages"

    def stage_checkpoint(self, index: int) -> Path:
        return self.stages / f"stage_{index + 1}.ckpt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def accuracy_plot(self) -> Path:
        return self.root / "accuracy_vs_stage.png"

    @property
    def ray_train(self) -> Path:
        return self.root / "ray_train"


__all__ = ["RunDir"]
