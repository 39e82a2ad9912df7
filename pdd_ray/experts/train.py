"""Train one expert in-process: optional transition init, then real-data SGD with a snapshot per epoch.

Ray only decides where this runs; everything numeric is here and testable
without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pdd_ray.evaluation.protocol import Phase, train_on_phases
from pdd_ray.models.functional import flatten_params, load_flat_
from pdd_ray.selection.forgetting import ForgettingTracker
from pdd_ray.train.loop import accuracy, make_sgd, train_epoch


@dataclass(frozen=True)
class ExpertRecipe:
    """Real-data training of an expert (reference: SGD lr 0.01, no momentum, no wd, batch 256, DSA)."""

    epochs: int = 50
    store_epochs: int | None = None  # keep snapshots 0..store_epochs (max_start_epoch + expert_epochs)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    # Epochs on the synthetic union U_i before real data, for the experts of stage i+1 (reference:
    # ``epoch_eval_train`` 1000, with the evaluation protocol's phase schedule).
    transition_epochs: int = 1000

    @property
    def num_snapshots(self) -> int:
        """Snapshots kept per expert: the init plus one per stored epoch."""
        return min(self.epochs, self.store_epochs if self.store_epochs is not None else self.epochs) + 1


@dataclass
class ExpertResult:
    """What one expert produces."""

    snapshots: torch.Tensor  # [num_snapshots, numel] float32
    test_accuracy: float
    init: str  # "random" or "transition"
    seed: int
    forgetting: torch.Tensor | None = None  # per training example


def transition_init(model: nn.Module, union: tuple[torch.Tensor, torch.Tensor, float], epochs: int,
                    augment, generator: torch.Generator, batch_size: int = 256) -> nn.Module:
    """Train on the synthetic union U_i with its learned lr: fresh SGD (momentum 0.9, wd 5e-4), DSA,
    the evaluation protocol's phase schedule (x0.1 past half), as the reference's transition does."""
    images, labels, lr = union
    return train_on_phases(model, [Phase(images, labels, lr, epochs)], batch_size=batch_size,
                           augment=augment, generator=generator)


def train_expert(seed: int, make_model: Callable[[], nn.Module], train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], recipe: ExpertRecipe, augment=None,
                 transition: tuple[torch.Tensor, torch.Tensor, float] | None = None,
                 track_forgetting: bool = False, on_epoch: Callable[[int], None] | None = None,
                 start: torch.Tensor | None = None) -> ExpertResult:
    """Train one expert from ``seed``; snapshot 0 is where real-data training starts.

    ``start``: a flat parameter vector the network starts from instead of its random init
    (the transition chain: snapshot 0 of the same expert of the previous stage).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = make_model()
    if start is not None:
        load_flat_(model, start)
    if transition is not None:
        transition_init(model, transition, recipe.transition_epochs, augment, generator, recipe.batch_size)
    device = next(model.parameters()).device
    images, labels = train[0].to(device), train[1].to(device)
    optimizer = make_sgd(model, recipe.lr, recipe.momentum, recipe.weight_decay)
    tracker = ForgettingTracker(len(labels)) if track_forgetting else None
    snapshots = [flatten_params(model).cpu()]
    for epoch in range(1, recipe.epochs + 1):
        train_epoch(model, images, labels, optimizer, recipe.batch_size, augment, generator, on_batch=tracker)
        if epoch < recipe.num_snapshots:
            snapshots.append(flatten_params(model).cpu())
        if on_epoch is not None:
            on_epoch(epoch)
    return ExpertResult(torch.stack(snapshots), accuracy(model, *test), "transition" if transition else "random",
                        seed, tracker.scores() if tracker else None)
