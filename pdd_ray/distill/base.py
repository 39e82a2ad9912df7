"""What every base method (MTT, gradient matching) provides to the PDD stage driver.

One iteration of distillation = a list of independent *work items* (one
expert trajectory and start epoch, one class, one batch shard). Each item's
``contribution`` is the gradient of its share of the iteration loss with
respect to the new synthetic images (and the learnable lr): the iteration
gradient is their plain sum. That is what lets a data-parallel driver hand
items to different workers and all-reduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import torch


@dataclass
class SyntheticState:
    """The synthetic data of one stage.

    ``frozen_*`` is the union of the earlier stages U_{i-1}: sampled by the
    student but never updated (conditioning). ``images`` (S_i) and ``lr`` are
    the leaves being optimised.
    """

    frozen_images: torch.Tensor  # [m, C, H, W], may be empty
    frozen_labels: torch.Tensor  # [m]
    images: torch.Tensor  # [n, C, H, W] leaf, requires_grad
    labels: torch.Tensor  # [n]
    lr: torch.Tensor | None = None  # scalar leaf (MTT's learnable lr) or None

    def union(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images the student may sample: frozen first, then the live (differentiable) ones."""
        return torch.cat([self.frozen_images.detach(), self.images]), torch.cat([self.frozen_labels, self.labels])


@dataclass
class Contribution:
    """One work item's loss share and gradients; iteration gradient = sum over items."""

    loss: float
    grad_images: torch.Tensor
    grad_lr: torch.Tensor | None = None

    @property
    def finite(self) -> bool:
        """False when the loss or any gradient is NaN/inf (the update must then be skipped)."""
        ok = math.isfinite(self.loss) and bool(torch.isfinite(self.grad_images).all())
        return ok and (self.grad_lr is None or bool(torch.isfinite(self.grad_lr).all()))


def combine(contributions: Iterable[Contribution]) -> Contribution:
    """Sum of contributions (what an all-reduce computes across workers), accumulated one at a time.

    Accumulating keeps one image-sized buffer however many items there are
    (a per-class gradient-matching item is as large as the whole set).
    """
    total: Contribution | None = None
    for c in contributions:
        if total is None:
            total = Contribution(c.loss, c.grad_images.clone(), None if c.grad_lr is None else c.grad_lr.clone())
            continue
        total.loss += c.loss
        total.grad_images += c.grad_images
        if c.grad_lr is not None:
            total.grad_lr = c.grad_lr.clone() if total.grad_lr is None else total.grad_lr + c.grad_lr
    if total is None:
        raise ValueError("an iteration needs at least one work item")
    return total


class Matcher(Protocol):
    """A base distillation method, seen from the stage driver."""

    def plan(self, iteration: int, generator: torch.Generator) -> list[Any]:
        """The independent work items of one iteration (each carries its own random seeds)."""

    def contribution(self, state: SyntheticState, item: Any) -> Contribution:
        """Gradient of this item's share of the loss w.r.t. ``state.images`` and ``state.lr``."""

    def after_iteration(self, state: SyntheticState, iteration: int, generator: torch.Generator) -> None:
        """Work between iterations (e.g. gradient matching trains its network on real data)."""
