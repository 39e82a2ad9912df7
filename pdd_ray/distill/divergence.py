"""Did a stage diverge? A run that blew up must not read as a normal finish at chance accuracy.

A stage counts as diverged when nothing it learned is usable:

* every update was skipped as non-finite (the matching loss was NaN/inf throughout);
* its images are not finite, or larger than ``MAX_IMAGE`` in network space (real images,
  normalised or ZCA-whitened, stay within a few tens);
* its learned lr is not finite or above ``MAX_LR`` (MTT's learned lrs are around 0.01-0.1;
  networks trained at such an lr on the set diverge in turn).

``pdd-ray run`` then says so in ``report.md`` and ``metrics.json`` and exits with
``EXIT_DIVERGED``.
"""

from __future__ import annotations

import math

import torch

MAX_IMAGE = 1e4
MAX_LR = 1e3
EXIT_DIVERGED = 3


def stage_problems(stage, index: int, iterations: int) -> list[str]:
    """Why stage ``index`` (0-based) diverged, one phrase per sign (empty: it did not)."""
    name = f"stage {index + 1}"
    problems = []
    skipped = int(stage.info.get("skipped_nonfinite", 0))
    if iterations > 0 and skipped >= iterations:
        problems.append(f"{name}: all {skipped} updates had a non-finite loss and were skipped")
    images = stage.images.detach()
    if not bool(torch.isfinite(images).all()):
        problems.append(f"{name}: images hold NaN or inf")
    elif images.numel() and float(images.abs().max()) > MAX_IMAGE:
        problems.append(f"{name}: images reached |x| = {float(images.abs().max()):.3g} (> {MAX_IMAGE:g})")
    lr = stage.lr
    if lr is not None and (not math.isfinite(lr) or lr > MAX_LR):
        problems.append(f"{name}: learned lr {lr:.3g} (> {MAX_LR:g})")
    return problems


def divergence(stages: list, iterations: int) -> list[str]:
    """Every sign of divergence over the stages of a set, in stage order."""
    return [p for k, stage in enumerate(stages) for p in stage_problems(stage, k, iterations)]


__all__ = ["divergence", "stage_problems", "EXIT_DIVERGED", "MAX_IMAGE", "MAX_LR"]
