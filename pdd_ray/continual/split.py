"""The class split: a class order cut into phases, and the data a phase (or an evaluation) may see.

Label convention. Inside a phase the machinery (experts, stages, selectors)
works on a ``DataBundle`` of that phase's classes alone, labelled 0..k-1 by
their position in the phase's class list, so the networks it trains have k
outputs and never a logit for another phase's class. A memory is stored in
those phase labels. At evaluation every label becomes its class's position in
the class order (phase t's local label j -> t·k + j), on the memory and on the
test images alike, and the network has one output per class seen so far. The
dataset's own class ids are recorded beside (``PhaseSplit.classes``).

Preprocessing (mean/std, ZCA) is the dataset's, fitted once on the whole
training split, as in the single-task runs; no image of another phase enters
a phase's bundle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pdd_ray.continual.config import PhasesConfig, check_split
from pdd_ray.data.bundle import DataBundle
from pdd_ray.data.splits import LabeledImages


@dataclass(frozen=True)
class PhaseSplit:
    """The class order and its phases (lists of dataset class ids, in order)."""

    order: tuple[int, ...]
    phases: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, config: PhasesConfig, num_classes: int, seed: int) -> "PhaseSplit":
        """The configured order (or a seeded permutation), cut into ``num_phases`` equal phases."""
        check_split(config, num_classes)
        if config.class_order is not None:
            order = list(config.class_order)
        else:
            generator = torch.Generator().manual_seed(seed if config.order_seed is None else config.order_seed)
            order = torch.randperm(num_classes, generator=generator).tolist()
        size = num_classes // config.num_phases
        phases = tuple(tuple(order[t * size:(t + 1) * size]) for t in range(config.num_phases))
        return cls(tuple(order), phases)

    def classes(self, phase: int) -> tuple[int, ...]:
        """Dataset class ids of phase ``phase`` (0-based)."""
        return self.phases[phase]

    def seen(self, phase: int) -> tuple[int, ...]:
        """Dataset class ids of phases 0..``phase``, in class order."""
        return tuple(c for p in self.phases[:phase + 1] for c in p)

    def offset(self, phase: int) -> int:
        """Position in the class order of phase ``phase``'s first class."""
        return sum(len(p) for p in self.phases[:phase])


def restrict(split: LabeledImages, classes: tuple[int, ...]) -> tuple[LabeledImages, torch.Tensor]:
    """The images of ``classes`` only, relabelled by position in ``classes``; and their indices in ``split``."""
    lookup = torch.full((split.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
    keep = torch.nonzero(lookup[split.labels] >= 0, as_tuple=True)[0]
    return LabeledImages(split.images[keep], lookup[split.labels[keep]], len(classes)), keep


def phase_bundle(data: DataBundle, classes: tuple[int, ...]) -> DataBundle:
    """``data`` reduced to ``classes`` (train, validation and test), labels 0..k-1 in that order."""
    train, kept = restrict(data.train, classes)
    return dataclasses.replace(data, train=train, val=restrict(data.val, classes)[0],
                               test=restrict(data.test, classes)[0],
                               class_names=tuple(data.class_names[c] for c in classes),
                               train_indices=data.train_indices[kept])


__all__ = ["PhaseSplit", "phase_bundle", "restrict"]
