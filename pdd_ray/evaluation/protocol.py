"""Train from scratch on synthetic stages (progressive / union / sequential) and measure accuracy.

A *phase* is one block of training on one image set. The modes of the paper's
ablation (Table 3) are just different phase lists over stages S_1..S_P:

    progressive: U_1, U_2, ..., U_P   (U_k = S_1 ∪ … ∪ S_k)
    union:       U_P
    sequential:  S_1, S_2, ..., S_P

One SGD optimizer runs through all phases (its momentum is carried over);
each phase sets its own lr (the stage's learned lr, or the given one) and
drops it ×0.1 halfway through the phase.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from pdd_ray.train.loop import accuracy, make_sgd, train_epoch

DEFAULT_LR = 0.01  # protocol lr when a stage carries no learned lr


@dataclass
class Phase:
    """One block of training: these images, this lr, this many epochs."""

    images: torch.Tensor
    labels: torch.Tensor
    lr: float
    epochs: int


def phases_for(stages: list, mode: str, epochs: int, lr: float | None = None) -> list[Phase]:
    """The phase list of an evaluation ``mode`` over ``stages`` (``synset.Stage`` objects)."""
    def stage_lr(stage) -> float:
        return lr if lr is not None else (stage.lr if stage.lr else DEFAULT_LR)

    data = [s.training_data() for s in stages]  # multi-formation sets are decoded here
    if mode == "progressive":
        return [Phase(torch.cat([d[0] for d in data[: k + 1]]), torch.cat([d[1] for d in data[: k + 1]]),
                      stage_lr(stages[k]), epochs) for k in range(len(stages))]
    if mode == "union":
        # The union is trained once, with the lr learned for the last (largest) stage.
        return [Phase(torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data]), stage_lr(stages[-1]), epochs)]
    if mode == "sequential":
        return [Phase(d[0], d[1], stage_lr(s), epochs) for s, d in zip(stages, data)]
    raise ValueError(f"unknown evaluation mode '{mode}'")


def train_on_phases(model: nn.Module, phases: list[Phase], *, batch_size: int = 256, momentum: float = 0.9,
                    weight_decay: float = 5e-4, augment=None, generator: torch.Generator | None = None,
                    after_phase: Callable[[int, nn.Module], None] | None = None, progress: bool = False) -> nn.Module:
    """Train ``model`` through ``phases`` with one carried-over SGD optimizer."""
    optimizer = make_sgd(model, phases[0].lr, momentum, weight_decay)
    device = next(model.parameters()).device
    bar = tqdm(total=sum(p.epochs for p in phases), desc="train", disable=not progress, leave=False)
    for k, phase in enumerate(phases):
        images, labels = phase.images.to(device), phase.labels.to(device)
        for epoch in range(phase.epochs):
            decayed = phase.epochs > 1 and epoch >= phase.epochs // 2
            _set_lr(optimizer, phase.lr * (0.1 if decayed else 1.0))
            train_epoch(model, images, labels, optimizer, batch_size, augment, generator)
            bar.update(1)
        if after_phase is not None:
            after_phase(k, model)
    bar.close()
    return model


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class EvalResult:
    """Test accuracy per run after every phase; the last phase is the headline number."""

    mode: str
    per_run: list[list[float]] = field(default_factory=list)  # [run][phase]

    @property
    def final(self) -> list[float]:
        """Accuracy of each run after its last phase."""
        return [run[-1] for run in self.per_run]

    @property
    def mean(self) -> float:
        """Mean final accuracy over runs."""
        return statistics.fmean(self.final)

    @property
    def std(self) -> float:
        """Population std of the final accuracy over runs (0 for one run)."""
        return statistics.pstdev(self.final) if len(self.final) > 1 else 0.0

    def per_phase_mean(self) -> list[float]:
        """Mean accuracy after each phase (the accuracy-vs-stage curve)."""
        return [statistics.fmean(col) for col in zip(*self.per_run)]

    def to_dict(self) -> dict:
        """JSON form, with the summary numbers spelled out."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "runs": len(self.per_run),
                "final": self.final, "per_phase_mean": self.per_phase_mean(), "per_run": self.per_run}


def evaluate_synthetic(stages: list, test: tuple[torch.Tensor, torch.Tensor], make_model: Callable[[], nn.Module], *,
                       mode: str = "progressive", runs: int = 5, epochs: int = 300, lr: float | None = None,
                       batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                       augment=None, seed: int = 0, progress: bool = True) -> EvalResult:
    """Train ``runs`` fresh networks on ``stages`` under ``mode`` and record test accuracy after each phase."""
    result = EvalResult(mode)
    phases = phases_for(stages, mode, epochs, lr)
    for run in tqdm(range(runs), desc=f"evaluate ({mode})", disable=not progress):
        torch.manual_seed(seed + run)  # network init
        generator = torch.Generator().manual_seed(seed + run)  # batch order and augmentation
        model = make_model()
        accs: list[float] = []
        train_on_phases(model, phases, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                        augment=augment, generator=generator,
                        after_phase=lambda k, m: accs.append(accuracy(m, *test)))
        result.per_run.append(accs)
    return result
