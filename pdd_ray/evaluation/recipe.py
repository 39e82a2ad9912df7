"""``EvalProtocol``: the evaluation protocol as one object, built from config, used wherever accuracy is measured.

Run reports, ``pdd-ray evaluate`` (eval.json), coreset baselines and sweeps all
train through ``EvalProtocol.evaluate`` / ``train`` and record
``EvalProtocol.describe()``, so the numbers and the sentence that explains
them come from the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pdd_ray.augment import make_augment
from pdd_ray.evaluation.protocol import (DEFAULT_LR, LR_DECAY, MULTISTEP_GAMMA, EvalResult, Phase, epochs_run,
                                         epochs_setting, evaluate_synthetic, first_decayed_epoch,
                                         multistep_milestones, phase_count, phases_for, train_on_phases)
from pdd_ray.precision import describe as describe_precision

_MODE_TEXT = {
    "progressive": "progressive mode (phase k on the union S_1 ∪ … ∪ S_k, one phase per stage)",
    "union": "union mode (one phase on the union of all stages)",
    "sequential": "sequential mode (phase k on stage S_k alone, one phase per stage)",
}


@dataclass(frozen=True)
class EvalProtocol:
    """How fresh networks are trained on a synthetic set and scored (defaults: PDD's ``evaluate_mtt.py``).

    IDC's recipe (``evaluate_idc.py`` / ``train.py``) is ``batch_size=64, schedule="multistep",
    cutmix=0.5, lr=0.01`` with DSA in IDC's mode without cutout (``augment.mode: idc``).
    """

    mode: str = "progressive"
    runs: int = 5
    epochs: int = 500  # per phase, as configured; ``epochs_run`` says how many a phase trains
    schedule: str = "official"
    batch_size: int = 256
    lr: float | None = None  # None: each stage's learned lr (DEFAULT_LR where a stage has none)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment: object | None = field(default=None, compare=False)  # a DSA, applied to every training batch
    arch: str = "network"  # named in ``describe``; the networks themselves come from ``make_model``
    cutmix: float = 0.0  # probability that a training batch is CutMix-ed after DSA (IDC: 0.5)
    checkpoints: int = 0  # > 0: also the best test accuracy over that many checkpoints a phase (test-selected)
    precision: str = "fp32"  # resolved: fp32 or bf16 autocast (``pdd_ray.precision``)

    @classmethod
    def from_config(cls, eval, augment=None, arch: str = "network", precision: str = "fp32") -> "EvalProtocol":
        """From an ``EvalConfig`` and an ``AugmentConfig`` (DSA off when ``augment`` is None or ``dsa`` false);
        ``precision`` resolved (``pdd_ray.precision.resolve_precision``)."""
        dsa = make_augment(augment) if augment is not None else None
        return cls(mode=eval.mode, runs=eval.runs, epochs=eval.epochs, schedule=eval.schedule,
                   batch_size=eval.batch_size, lr=eval.lr, momentum=eval.momentum, weight_decay=eval.weight_decay,
                   seed=eval.seed, augment=dsa, arch=arch, cutmix=float(getattr(eval, "cutmix", 0.0)),
                   checkpoints=int(getattr(eval, "report_best_of", 0)), precision=precision)

    def replace(self, **changes) -> "EvalProtocol":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ training

    def phases(self, stages: list, mode: str | None = None, device: torch.device | str | None = None) -> list[Phase]:
        """The phase list of ``mode`` (default: the protocol's) over ``stages``, views of one union."""
        return phases_for(stages, mode or self.mode, self.epochs, self.lr, device)

    def epochs_per_phase(self) -> int:
        """Epochs one phase actually trains under the schedule."""
        return epochs_run(self.epochs, self.schedule)

    def total_epochs(self, num_stages: int, mode: str | None = None) -> int:
        """Epochs a network trains through the whole phase list of ``mode`` over ``num_stages`` stages."""
        return phase_count(mode or self.mode, num_stages) * self.epochs_per_phase()

    def with_budget(self, total: int) -> "EvalProtocol":
        """This protocol in union mode, its one phase training ``total`` epochs (an equal-budget baseline)."""
        budgeted = self.replace(mode="union", epochs=epochs_setting(total, self.schedule))
        if budgeted.total_epochs(1) != total:
            raise ValueError(f"cannot train exactly {total} epochs under the '{self.schedule}' schedule")
        return budgeted

    def equal_budget(self, num_stages: int) -> "EvalProtocol":
        """One union phase training as many epochs as this protocol trains over ``num_stages`` stages.

        How real-image references (random real, the full training split) are trained beside a set.
        """
        return self.with_budget(self.total_epochs(num_stages))

    def without_augmentation(self) -> "EvalProtocol":
        """This protocol with DSA and CutMix off (DD-Ranking's 'without augmentation' figure)."""
        return self.replace(augment=None, cutmix=0.0)

    def train(self, model: nn.Module, phases: list[Phase], generator: torch.Generator | None = None,
              optimizer: torch.optim.Optimizer | None = None,
              after_phase: Callable[[int, nn.Module], None] | None = None, progress: bool = False) -> nn.Module:
        """Train ``model`` through ``phases`` (``train_on_phases`` with this protocol's settings)."""
        return train_on_phases(model, phases, batch_size=self.batch_size, momentum=self.momentum,
                               weight_decay=self.weight_decay, augment=self.augment, generator=generator,
                               after_phase=after_phase, progress=progress, schedule=self.schedule,
                               optimizer=optimizer, cutmix=self.cutmix, precision=self.precision)

    def evaluate(self, stages: list, split: tuple[torch.Tensor, torch.Tensor], make_model: Callable[[], nn.Module],
                 *, mode: str | None = None, runs: int | None = None, progress: bool = True,
                 device: torch.device | str | None = None) -> EvalResult:
        """Train ``runs`` fresh networks on ``stages`` and record accuracy on ``split`` after every phase.

        ``device``: where the union lives while the runs train (once, every phase a view of it).
        """
        return evaluate_synthetic(stages, split, make_model, mode=mode or self.mode,
                                  runs=self.runs if runs is None else runs, epochs=self.epochs, lr=self.lr,
                                  batch_size=self.batch_size, momentum=self.momentum,
                                  weight_decay=self.weight_decay, augment=self.augment, seed=self.seed,
                                  progress=progress, schedule=self.schedule, device=device, cutmix=self.cutmix,
                                  checkpoints=self.checkpoints, precision=self.precision)

    # ------------------------------------------------------------ in words

    def lr_text(self) -> str:
        """Where the lr comes from."""
        if self.lr is not None:
            return f"lr {self.lr:g} in every phase"
        return (f"lr = each phase's stage's learned lr (union: the last stage's; {DEFAULT_LR:g} where a stage "
                "has none)")

    def schedule_text(self) -> str:
        """The epochs of one phase and where its lr drops, 1-based, as actually run."""
        n = self.epochs_per_phase()
        origin = (f"eval.epochs {self.epochs} + 1, the reference's range(E+1)" if self.schedule == "official"
                  else f"eval.epochs {self.epochs}")
        if self.schedule == "multistep":
            m1, m2 = multistep_milestones(self.epochs)
            return (f"{n} epochs per phase ({origin}; 'multistep' schedule, IDC's MultiStepLR): lr x{MULTISTEP_GAMMA:g} "
                    f"after epoch {m1} and again after epoch {m2}")
        first = first_decayed_epoch(self.epochs, self.schedule)
        if first is None:
            drop = "no lr drop (phase too short)"
        else:
            drop = (f"epochs 1-{first} at the phase's lr and {first + 1}-{n} at lr x{LR_DECAY:g} "
                    f"(dropped after epoch {first})")
        return f"{n} epochs per phase ({origin}; '{self.schedule}' schedule), {drop}"

    def augment_text(self) -> str:
        """DSA in words."""
        if self.augment is None:
            return f"no DSA, CutMix with probability {self.cutmix:g} per batch" if self.cutmix > 0 \
                else "no augmentation"
        config = getattr(self.augment, "config", None)
        detail = f" ({config.strategy}, {config.mode})" if config is not None else ""
        mix = f", then CutMix with probability {self.cutmix:g} per batch" if self.cutmix > 0 else ""
        return f"DSA{detail} on every training batch{mix}"

    def describe(self, mode: str | None = None, runs: int | None = None, num_stages: int | None = None) -> str:
        """One sentence saying exactly what is done (``mode`` / ``runs`` as ``evaluate`` takes them)."""
        mode, runs = mode or self.mode, self.runs if runs is None else runs
        total = (f", {self.total_epochs(num_stages, mode)} epochs in all over {num_stages} stage(s)"
                 if num_stages is not None else "")
        nets = f"{runs} fresh {self.arch} network{'s' if runs != 1 else ''}"
        return (f"{nets} (run j seeded {self.seed}+j) trained in {_MODE_TEXT[mode]}: {self.schedule_text()}{total}; "
                f"SGD (momentum {self.momentum:g}, weight decay {self.weight_decay:g}) rebuilt at the start of each "
                f"phase at its lr, momentum buffers carried over from the previous phase; batch {self.batch_size}; "
                f"{self.augment_text()}; {self.lr_text()}; accuracy measured after the last epoch of each phase, "
                f"mean ± population std over the {runs} run{'s' if runs != 1 else ''}{self.best_text()}"
                f"{self.precision_text()}")

    def precision_text(self) -> str:
        """Nothing for fp32 (the sentence every earlier result file carries); the autocast otherwise."""
        return "" if self.precision == "fp32" else f"; compute: {describe_precision(self.precision)}"

    def best_text(self) -> str:
        """The test-selected 'best over checkpoints' figure, when asked for."""
        if self.checkpoints <= 0:
            return ""
        return (f"; beside it, the best test accuracy over {self.checkpoints} checkpoints per phase (IDC's reported "
                "figure), which is selected on the test set")


__all__ = ["EvalProtocol"]
