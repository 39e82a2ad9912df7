"""What a PDD run reports as its stages go: tracker scalars and images, and one summary line per event.

Tags (one section per stage; the step is the run's global iteration, ``stage * iterations + it``,
so it only grows, as W&B wants):

    stage_<k>/loss, stage_<k>/lr, stage_<k>/skipped_nonfinite   every ``tracking.every`` iterations
    stage_<k>/val_accuracy                                     at each validation check
    stage_<k>/best_val_accuracy, stage_<k>/best_iteration      when the stage is finished
    stage_<k>/images                                           the finished stage's image grid

Summary lines (INFO records: ``--log-level``), one per validation check and one per finished stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pdd_ray.distill.runners import StageHooks
from pdd_ray.progress import summary
from pdd_ray.tracking import Tracker

LOGGER = "pdd_ray.distill"


class StageReporter:
    """Turns one run's stage events into tracker calls and summary lines (0-based stage indices)."""

    def __init__(self, tracker: Tracker | None, num_stages: int, iterations: int, every: int = 1):
        self.tracker = tracker or Tracker()
        self.num_stages, self.iterations, self.every = num_stages, iterations, every
        self.last: dict = {}  # the latest training scalars, for the validation line

    def hooks(self, index: int, on_iteration: Callable[[int, int], None] | None = None,
              on_validation: Callable[[int, int, float], None] | None = None) -> StageHooks:
        """Stage ``index``'s hooks: the caller's (given the stage index first) after this reporter's own."""
        def step(it: int, values: dict) -> None:
            self.on_step(index, it, values)

        def validation(it: int, accuracy: float) -> None:
            self.on_validation(index, it, accuracy)
            if on_validation is not None:
                on_validation(index, it, accuracy)

        iteration = (lambda it: on_iteration(index, it)) if on_iteration is not None else None
        return StageHooks(on_iteration=iteration, on_validation=validation, on_step=step)

    def step(self, index: int, it: int) -> int:
        """The global step of iteration ``it`` of stage ``index``."""
        return index * self.iterations + it

    def on_step(self, index: int, it: int, values: dict) -> None:
        """An iteration's loss, learned lr (None: not learned) and skipped-update count so far."""
        self.last = values
        if it % self.every and it != self.iterations:
            return
        scalars = {f"stage_{index + 1}/{k}": float(v) for k, v in values.items() if v is not None}
        self.tracker.log_scalars(scalars, self.step(index, it))

    def on_validation(self, index: int, it: int, accuracy: float) -> None:
        self.tracker.log_scalars({f"stage_{index + 1}/val_accuracy": accuracy}, self.step(index, it))
        loss = self.last.get("loss")
        extra = f" (matching loss {loss:.4g})" if loss is not None and it > 0 else ""
        summary(f"stage {index + 1}/{self.num_stages}, iteration {it}/{self.iterations}: "
                f"validation accuracy {100 * accuracy:.2f}%{extra}", LOGGER)

    def stage_done(self, index: int, info: dict, lr: float | None, picture: Path) -> None:
        """A finished stage: its best iterate's numbers and its image grid (``picture``, already written)."""
        step = self.step(index, self.iterations)
        tag = f"stage_{index + 1}"
        self.tracker.log_scalars({f"{tag}/best_val_accuracy": info["val_accuracy"],
                                  f"{tag}/best_iteration": info["best_iteration"]}, step)
        self.tracker.log_image(f"{tag}/images", picture, step)
        lr_text = f", learned lr {lr:.3g}" if lr is not None else ""
        summary(f"stage {index + 1}/{self.num_stages} done: best validation accuracy "
                f"{100 * info['val_accuracy']:.2f}% at iteration {info['best_iteration']}{lr_text}, "
                f"{info.get('skipped_nonfinite', 0)} skipped (non-finite) update(s); images: {picture}", LOGGER)


__all__ = ["StageReporter"]
