"""Train from scratch on synthetic stages (progressive / union / sequential) and measure accuracy.

A *phase* is one block of training on one image set. The modes of the paper's
ablation (Table 3) are just different phase lists over stages S_1..S_P:

    progressive: U_1, U_2, ..., U_P   (U_k = S_1 ∪ … ∪ S_k)
    union:       U_P
    sequential:  S_1, S_2, ..., S_P

Each phase restarts SGD at its own lr (the stage's learned lr, or the given
one) with the momentum buffers of the previous phase carried over, as PDD's
``evaluate_mtt.py`` does (a fresh SGD per phase whose state is replaced by the
previous phase's); here one optimizer runs through all phases and each phase
resets its lr, momentum and weight decay, which is the same thing.

The lr schedule inside a phase of ``epochs`` = E (``SCHEDULES``):

    official: E + 1 epochs (the reference's ``range(Epoch + 1)``); the lr drops
              x0.1 after the epoch with index E//2 + 1, so epochs 0..E//2+1 run
              at lr and the rest at lr/10 (no drop when E < 3)
    halfway:  E epochs; x0.1 from epoch index E//2 (none when E == 1)
    multistep: E epochs, IDC's ``MultiStepLR(milestones=[2E//3, 5E//6], gamma=0.2)``
              (``train.py``): epoch index i runs at lr x 0.2^(number of milestones <= i)

``cutmix`` (IDC's evaluation and network training): the probability that a
batch is CutMix-ed after DSA (``pdd_ray.augment.cutmix``).

``checkpoints`` = n > 0 (only on request): test accuracy is also measured after
epochs f, 2f, …, E of every phase (f = max(E // n, 1), 1-based; IDC's
``epoch_print_freq = epochs // num_val``) and the best of them is reported
beside the final accuracy, as ``evaluate_idc.py`` reports it. That figure is
selected on the test set; the headline stays the final accuracy.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pdd_ray.progress import progress_bar
from pdd_ray.train.loop import accuracy, make_sgd, train_epoch

DEFAULT_LR = 0.01  # protocol lr when a stage carries no learned lr
SCHEDULES = ("official", "halfway", "multistep")
LR_DECAY = 0.1
MULTISTEP_GAMMA = 0.2  # IDC train.py's MultiStepLR gamma


def multistep_milestones(epochs: int) -> tuple[int, int]:
    """IDC's milestones for a phase of ``epochs``: ``(2E//3, 5E//6)``."""
    return 2 * epochs // 3, 5 * epochs // 6


@dataclass
class Phase:
    """One block of training: these images, this lr, this many epochs."""

    images: torch.Tensor
    labels: torch.Tensor
    lr: float
    epochs: int


def phases_for(stages: list, mode: str, epochs: int, lr: float | None = None,
               device: torch.device | str | None = None) -> list[Phase]:
    """The phase list of an evaluation ``mode`` over ``stages`` (``synset.Stage`` objects).

    The union S_1 ∪ … ∪ S_P is built once (on ``device`` when given) and every
    phase's images are a view of it: the prefix U_k for progressive, the slice
    S_k for sequential. Memory is one union however many stages there are.
    """
    if mode not in ("progressive", "union", "sequential"):
        raise ValueError(f"unknown evaluation mode '{mode}'")
    lrs = [lr if lr is not None else (s.lr if s.lr else DEFAULT_LR) for s in stages]
    images, labels, ends = [], [], [0]
    for stage in stages:  # multi-formation sets are decoded here, one stage at a time
        x, y = stage.training_data()
        images.append(x.to(device))
        labels.append(y.to(device))
        ends.append(ends[-1] + len(y))
    images, labels = torch.cat(images), torch.cat(labels)
    if mode == "progressive":
        return [Phase(images[: ends[k + 1]], labels[: ends[k + 1]], lrs[k], epochs) for k in range(len(stages))]
    if mode == "union":
        # The union is trained once, with the lr learned for the last (largest) stage.
        return [Phase(images, labels, lrs[-1], epochs)]
    return [Phase(images[ends[k]: ends[k + 1]], labels[ends[k]: ends[k + 1]], lrs[k], epochs)
            for k in range(len(stages))]


def epochs_run(epochs: int, schedule: str = "official") -> int:
    """Epochs a phase of ``epochs`` actually trains: ``epochs + 1`` (official) or ``epochs`` (halfway, multistep)."""
    _check_schedule(schedule)
    return epochs + 1 if schedule == "official" else epochs


def epochs_setting(run: int, schedule: str = "official") -> int:
    """The phase ``epochs`` that trains exactly ``run`` epochs under ``schedule`` (inverse of ``epochs_run``)."""
    epochs = run - 1 if schedule == "official" else run
    if epochs < 1 or epochs_run(epochs, schedule) != run:
        raise ValueError(f"no phase length trains {run} epochs under the '{schedule}' schedule")
    return epochs


def first_decayed_epoch(epochs: int, schedule: str = "official") -> int | None:
    """Index of the first epoch of a phase of ``epochs`` that runs at a reduced lr; None when none does."""
    if schedule == "multistep":
        first = next((m for m in multistep_milestones(epochs) if 0 < m), None)
        return first if first is not None and first < epochs else None
    first = epochs // 2 + 2 if schedule == "official" else epochs // 2
    if schedule == "halfway" and epochs <= 1:
        return None
    return first if first < epochs_run(epochs, schedule) else None


def lr_factor(epoch: int, epochs: int, schedule: str = "official") -> float:
    """The multiple of the phase's lr that epoch index ``epoch`` of a phase of ``epochs`` runs at."""
    if schedule == "multistep":
        return MULTISTEP_GAMMA ** sum(1 for m in multistep_milestones(epochs) if m <= epoch)
    first = first_decayed_epoch(epochs, schedule)
    return LR_DECAY if first is not None and epoch >= first else 1.0


def phase_count(mode: str, num_stages: int) -> int:
    """Phases a ``mode`` trains over ``num_stages`` stages (see ``phases_for``)."""
    if mode not in ("progressive", "union", "sequential"):
        raise ValueError(f"unknown evaluation mode '{mode}'")
    return 1 if mode == "union" else num_stages


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """The protocol's SGD over ``model``'s parameters (what ``train_on_phases(optimizer=...)`` takes)."""
    return make_sgd(model, lr, momentum, weight_decay)


def train_on_phases(model: nn.Module, phases: list[Phase], *, batch_size: int = 256, momentum: float = 0.9,
                    weight_decay: float = 5e-4, augment=None, generator: torch.Generator | None = None,
                    after_phase: Callable[[int, nn.Module], None] | None = None, progress: bool = False,
                    schedule: str = "official", optimizer: torch.optim.Optimizer | None = None,
                    cutmix: float = 0.0,
                    after_epoch: Callable[[int, int, nn.Module], None] | None = None,
                    precision: str = "fp32") -> nn.Module:
    """Train ``model`` through ``phases`` under ``schedule``, SGD momentum carried from phase to phase.

    ``optimizer``: an SGD over ``model``'s parameters whose momentum buffers carry into these
    phases (to continue an earlier call); None starts from a new one (no momentum yet). Each phase
    resets its lr, momentum and weight decay, as a rebuilt optimizer would. ``after_phase(k, model)``
    runs after the last epoch of phase k, ``after_epoch(k, e, model)`` after epoch index e of phase k
    (before ``after_phase``). ``cutmix``: per-batch CutMix probability (0: none). ``precision``:
    ``fp32`` or ``bf16`` autocast (``pdd_ray.precision``).
    """
    _check_schedule(schedule)
    if optimizer is None:
        optimizer = make_optimizer(model, phases[0].lr if phases else DEFAULT_LR, momentum, weight_decay)
    device = next(model.parameters()).device
    bar = progress_bar(total=sum(epochs_run(p.epochs, schedule) for p in phases), desc="train", unit="epoch",
                       disable=not progress, leave=False)
    for k, phase in enumerate(phases):
        images, labels = phase.images.to(device), phase.labels.to(device)
        for group in optimizer.param_groups:  # the reference's fresh SGD per phase, its state kept
            group.update(momentum=momentum, weight_decay=weight_decay)
        for epoch in range(epochs_run(phase.epochs, schedule)):
            _set_lr(optimizer, phase.lr * lr_factor(epoch, phase.epochs, schedule))
            train_epoch(model, images, labels, optimizer, batch_size, augment, generator, cutmix=cutmix,
                        precision=precision)
            if after_epoch is not None:
                after_epoch(k, epoch, model)
            bar.update(1)
        if after_phase is not None:
            after_phase(k, model)
    bar.close()
    return model


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown evaluation schedule '{schedule}'; choose one of: {', '.join(SCHEDULES)}")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class EvalResult:
    """Test accuracy per run after every phase; the last phase is the headline number."""

    mode: str
    per_run: list[list[float]] = field(default_factory=list)  # [run][phase]
    checkpoints: int = 0  # > 0: best_per_run holds the best test accuracy over that many checkpoints per phase
    best_per_run: list[list[float]] = field(default_factory=list)  # [run][phase], selected on the test set

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

    def per_phase_std(self) -> list[float]:
        """Population std over runs of the accuracy after each phase (the curve's error bars; 0 for one run)."""
        return [statistics.pstdev(col) if len(col) > 1 else 0.0 for col in zip(*self.per_run)]

    def to_dict(self) -> dict:
        """JSON form, with the summary numbers spelled out."""
        out = {"mode": self.mode, "mean": self.mean, "std": self.std, "runs": len(self.per_run),
               "final": self.final, "per_phase_mean": self.per_phase_mean(), "per_phase_std": self.per_phase_std(),
               "per_run": self.per_run}
        if self.checkpoints > 0:
            best = [run[-1] for run in self.best_per_run]
            out["best_over_checkpoints"] = {
                "mean": statistics.fmean(best), "std": statistics.pstdev(best) if len(best) > 1 else 0.0,
                "final": best, "per_run": self.best_per_run, "checkpoints_per_phase": self.checkpoints,
                "selected_on": "the test split (IDC's reported figure); not the headline, which is the final accuracy"}
        return out


def evaluate_synthetic(stages: list, test: tuple[torch.Tensor, torch.Tensor], make_model: Callable[[], nn.Module], *,
                       mode: str = "progressive", runs: int = 5, epochs: int = 500, lr: float | None = None,
                       batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                       augment=None, seed: int = 0, progress: bool = True, schedule: str = "official",
                       device: torch.device | str | None = None, cutmix: float = 0.0,
                       checkpoints: int = 0, precision: str = "fp32") -> EvalResult:
    """Train ``runs`` fresh networks on ``stages`` under ``mode`` and record test accuracy after each phase.

    Run j seeds the network init and the batch order / augmentation with ``seed + j``
    (``evaluate_run``); ``device``: where the union lives while the runs train (default: where it is).
    """
    result = EvalResult(mode, checkpoints=checkpoints)
    phases = phases_for(stages, mode, epochs, lr, device)
    for run in progress_bar(range(runs), desc=f"evaluate ({mode})", unit="run", disable=not progress):
        best: list[float] = []
        result.per_run.append(evaluate_run(phases, test, make_model, seed + run, batch_size=batch_size,
                                           momentum=momentum, weight_decay=weight_decay, augment=augment,
                                           schedule=schedule, cutmix=cutmix, checkpoints=checkpoints, best=best,
                                           precision=precision))
        if checkpoints > 0:
            result.best_per_run.append(best)
    return result


def evaluate_run(phases: list[Phase], test: tuple[torch.Tensor, torch.Tensor], make_model: Callable[[], nn.Module],
                 seed: int, *, batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                 augment=None, schedule: str = "official", cutmix: float = 0.0, checkpoints: int = 0,
                 best: list | None = None, precision: str = "fp32") -> list[float]:
    """One evaluation run: a fresh network seeded ``seed`` trained through ``phases``; test accuracy per phase.

    ``seed`` seeds the network init (global RNG) and the batch order / augmentation (its own
    generator), so one run gives the same numbers in this process or in a Ray task. With
    ``checkpoints`` > 0, ``best`` receives each phase's best test accuracy over its checkpoints
    (module docstring): a test-selected figure, only on request.
    """
    torch.manual_seed(seed)  # network init
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation
    model = make_model()
    accs: list[float] = []
    seen: dict[int, float] = {}  # phase -> best checkpoint accuracy so far

    def after_epoch(k: int, epoch: int, m: nn.Module) -> None:
        every = max(epochs_run(phases[k].epochs, schedule) // checkpoints, 1)
        if (epoch + 1) % every == 0:
            seen[k] = max(seen.get(k, 0.0), accuracy(m, *test, precision=precision))

    train_on_phases(model, phases, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                    augment=augment, generator=generator, schedule=schedule, cutmix=cutmix,
                    after_epoch=after_epoch if checkpoints > 0 else None, precision=precision,
                    after_phase=lambda k, m: accs.append(accuracy(m, *test, precision=precision)))
    if checkpoints > 0 and best is not None:
        # The last epoch is a checkpoint too (E is a multiple of f when n divides E; else add it).
        best.extend(max(seen.get(k, 0.0), acc) for k, acc in enumerate(accs))
    return accs
