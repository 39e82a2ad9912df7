"""What a base distillation method is to PDD: one object that owns everything method-specific.

The stage driver never asks ``method == "..."``: it asks the method. An entry owns
its config section and preset, whether it needs expert trajectories and learns
an lr, its multi-formation factor, how it builds its matcher, its warm-up of the
matching network on the earlier stages, its part of the config fingerprint and
its cross-field checks. A new method is one module with one ``@METHODS.register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pdd_ray.augment import make_augment

# Every ``config`` below is the run's ``DistillConfig`` and ``data`` its ``DataBundle``; they are not
# imported here because the config module imports this registry to lay presets under the user's keys.


@dataclass
class MatcherContext:
    """Everything a method may use to build stage ``index``'s matcher."""

    config: Any  # DistillConfig
    data: Any  # DataBundle
    earlier: list  # the finished stages before this one (synset.Stage)
    index: int  # 0-based stage index
    device: torch.device
    allowed: torch.Tensor | None = None  # positions in data.train this stage distils (forgetting partition)
    comm: Any = None  # data-parallel communicator, None in one process


class BaseMethod:
    """Defaults shared by every method; an entry overrides what differs.

    ``section`` names the config section the method owns (``mtt``, ``gm``);
    the other methods' sections are left out of its fingerprint.
    """

    name: str = ""
    section: str = ""
    needs_experts: bool = False  # matches against expert trajectories (OUT/experts/stage_<i>)
    learns_lr: bool = False  # distils a learning rate along with the images
    shards_batch: bool = False  # can split each synthetic minibatch over workers (parallel.split=batch)

    def preset(self) -> dict:
        """Config defaults laid under the user's values (``{section: {...}, "eval": {...}}``)."""
        return {}

    def options(self, config):
        """The method's own config section, as the run uses it."""
        return getattr(config, self.section)

    def factor(self, config) -> int:
        """Multi-formation factor: each stored image decodes into factor² training images."""
        return 1

    def lr_img(self, config) -> float:
        """Learning rate of the image optimiser."""
        return self.options(config).lr_img

    def lr_lr(self, config) -> float | None:
        """Learning rate of the learned-lr optimiser (None: no lr is learned)."""
        return None

    def initial_lr(self, config) -> float | None:
        """Start value of the learned lr of every stage (None: none)."""
        return None

    def augment(self, config):
        """The differentiable augmentation used while matching (None: none)."""
        return make_augment(config.augment)

    def check(self, config) -> None:
        """Cross-field checks of a run with this method (UserError on the first problem)."""
        self.options(config).validate()

    def fingerprint(self, config) -> dict:
        """The method's part of the config fingerprint (settings that change the images)."""
        from pdd_ray.config import to_dict
        return {self.section: to_dict(self.options(config))}

    def before_stage(self, config, data, index: int, progress: bool, finished: list | None = None) -> None:
        """Work a stage needs before its matcher exists (MTT: build the stage's expert buffer).

        ``finished``: the stages done so far, in memory (None: read them from the run directory if needed).
        """

    def build_matcher(self, ctx: MatcherContext):
        """The stage's matcher (see ``pdd_ray.distill.base.Matcher``)."""
        raise NotImplementedError
