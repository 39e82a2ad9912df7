"""Train one expert in-process: optional transition init, then real-data SGD with a snapshot per epoch.

Ray only decides where this runs; everything numeric is here and testable
without a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pdd_ray.evaluation.protocol import LR_DECAY, Phase, make_optimizer, train_on_phases
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
    # Training on the synthetic union U_i before real data, for the experts of stage i+1: either
    # ``transition_epochs`` epochs (reference: ``epoch_eval_train`` 1000, with the evaluation protocol's
    # phase schedule), whose cost grows with the union, or a fixed ``transition_steps`` SGD steps at
    # ``batch_size`` (x0.1 from step N//2), the same cost at every stage. Exactly one is set.
    transition_epochs: int | None = 1000
    transition_steps: int | None = None

    def transition_budget_problem(self) -> str | None:
        """Why the transition budget is unusable (a one-line message), or None."""
        if (self.transition_epochs is None) == (self.transition_steps is None):
            return ("set exactly one of recipe.transition_epochs (faithful) and recipe.transition_steps "
                    "(a fixed budget: then recipe.transition_epochs=null)")
        budget = self.transition_epochs if self.transition_steps is None else self.transition_steps
        if budget < 1:
            name = "transition_epochs" if self.transition_steps is None else "transition_steps"
            return f"recipe.{name} must be >= 1, got {budget}"
        return None

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
    transition_seconds: float | None = None  # wall time of the training on U_i (transition experts only)


def transition_init(model: nn.Module, union: tuple[torch.Tensor, torch.Tensor, float], epochs: int | None,
                    augment, generator: torch.Generator, batch_size: int = 256, steps: int | None = None,
                    precision: str = "fp32") -> nn.Module:
    """Train on the synthetic union U_i with its learned lr: fresh SGD (momentum 0.9, wd 5e-4), DSA,
    x0.1 past half, as the reference's transition does.

    ``epochs``: the evaluation protocol's phase schedule over that many epochs (the reference);
    ``steps`` instead: exactly that many SGD steps, whatever the union's size (``train_steps``).
    """
    images, labels, lr = union
    if steps is not None:
        return train_steps(model, images, labels, lr, steps, batch_size, augment, generator, precision)
    return train_on_phases(model, [Phase(images, labels, lr, epochs)], batch_size=batch_size,
                           augment=augment, generator=generator, precision=precision)


def step_batches(n: int, steps: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``steps`` minibatches of indices into ``n`` examples: consecutive shuffled epochs cut into batches
    (as ``train_epoch`` cuts one, a smaller last batch included), stopping after exactly ``steps``."""
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        batches += list(torch.randperm(n, generator=generator).split(batch_size))
    return batches[:steps]


def train_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lr: float, steps: int,
                batch_size: int, augment, generator: torch.Generator, precision: str = "fp32") -> nn.Module:
    """``steps`` SGD steps (the protocol's optimiser: momentum 0.9, wd 5e-4) at ``lr``, x0.1 from step steps//2."""
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    optimizer = make_optimizer(model, lr)
    for step, batch in enumerate(step_batches(len(labels), steps, batch_size, generator)):
        for group in optimizer.param_groups:
            group["lr"] = lr * (LR_DECAY if step >= steps // 2 else 1.0)
        batch = batch.to(device)
        # One "epoch" over exactly this batch is one SGD step on it (the loop's augmentation and loss).
        train_epoch(model, images[batch], labels[batch], optimizer, len(batch), augment, generator,
                    precision=precision)
    return model


def train_expert(seed: int, make_model: Callable[[], nn.Module], train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], recipe: ExpertRecipe, augment=None,
                 transition: tuple[torch.Tensor, torch.Tensor, float] | None = None,
                 track_forgetting: bool = False, on_epoch: Callable[[int], None] | None = None,
                 start: torch.Tensor | None = None, precision: str = "fp32") -> ExpertResult:
    """Train one expert from ``seed``; snapshot 0 is where real-data training starts.

    ``start``: a flat parameter vector the network starts from instead of its random init
    (the transition chain: snapshot 0 of the same expert of the previous stage). ``precision``:
    ``fp32`` or ``bf16`` autocast for every training and accuracy pass (``pdd_ray.precision``);
    snapshots are always the fp32 parameters.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = make_model()
    if start is not None:
        load_flat_(model, start)
    transition_seconds = None
    if transition is not None:
        began = time.perf_counter()
        transition_init(model, transition, recipe.transition_epochs, augment, generator, recipe.batch_size,
                        steps=recipe.transition_steps, precision=precision)
        transition_seconds = time.perf_counter() - began
    device = next(model.parameters()).device
    images, labels = train[0].to(device), train[1].to(device)
    optimizer = make_sgd(model, recipe.lr, recipe.momentum, recipe.weight_decay)
    tracker = ForgettingTracker(len(labels)) if track_forgetting else None
    snapshots = [flatten_params(model).cpu()]
    for epoch in range(1, recipe.epochs + 1):
        train_epoch(model, images, labels, optimizer, recipe.batch_size, augment, generator, on_batch=tracker,
                    precision=precision)
        if epoch < recipe.num_snapshots:
            snapshots.append(flatten_params(model).cpu())
        if on_epoch is not None:
            on_epoch(epoch)
    return ExpertResult(torch.stack(snapshots), accuracy(model, *test, precision=precision), "transition" if transition else "random",
                        seed, tracker.scores() if tracker else None, transition_seconds)
