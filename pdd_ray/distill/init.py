"""Where a stage's new images start: real images of their class, optionally from a forgetting partition."""

from __future__ import annotations

import math

import torch

from pdd_ray.data.splits import LabeledImages
from pdd_ray.distill.formation import encode_init


def forgetting_partition(scores: torch.Tensor, stage: int, bin_width: float, labels: torch.Tensor,
                         keep_at_least: int) -> torch.Tensor:
    """Indices stage ``stage`` (0-based) distils: forgetting scores in [w·stage, w·(stage+1)) (paper Sec. 5).

    Stages walk up the bins, lowest first: easy (rarely forgotten) examples early, hard
    ones late. A class with fewer than ``keep_at_least`` examples in its bin keeps the
    ones whose scores lie nearest the bin instead, so every stage can initialise.
    """
    low, high = stage * bin_width, (stage + 1) * bin_width
    kept = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c, as_tuple=True)[0]
        s = scores[members]
        allowed = members[(s >= low) & (s < high)]
        if len(allowed) < keep_at_least:
            distance = (low - s).clamp(min=0) + (s - high).clamp(min=0)  # 0 inside the bin
            order = torch.sort(distance, stable=True).indices
            allowed = members[order[:keep_at_least]]
        kept.append(allowed)
    return torch.cat(kept).sort().values


def init_from_real(real: LabeledImages, ipc: int, factor: int, generator: torch.Generator,
                   allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` stored images per class from random real images (factor² real images tiled per stored one)."""
    pool = real if allowed is None else real.subset(allowed)
    images, labels = [], []
    per_image = factor * factor
    for c in range(pool.num_classes):
        picked = pool.sample(c, ipc * per_image, generator)
        if len(picked) < ipc * per_image:  # tiny classes: repeat rather than fail
            reps = math.ceil(ipc * per_image / max(len(picked), 1))
            picked = picked.repeat(reps, 1, 1, 1)[: ipc * per_image]
        images.append(encode_init(picked, factor) if factor > 1 else picked)
        labels.append(torch.full((ipc,), c, dtype=torch.long))
    return torch.cat(images).clone(), torch.cat(labels)
