"""Gradient matching as PDD bases: IDC, DSA and DC (one matcher, three presets).

Each entry's preset fills the ``gm`` section (and, for IDC, the evaluation recipe and
the network-training augmentation) under the user's values, so ``method=dsa
gm.lr_img=0.05`` is DSA with that image lr.

Three augmentations take part in a gradient-matching run:

* matching (siamese, ``gm.match_augment`` / ``gm.match_mode`` / ``gm.match_batch``; the
  ``augment`` section's strategy and mode where those are null),
* the matching network's training between steps (per sample, ``gm.net_augment``; the
  matching strategy where null),
* evaluation and the warm-up on earlier stages (the ``augment`` section, as the protocol).

``augment.dsa: false`` switches all three off; DC never augments while matching or
training its network.
"""

from __future__ import annotations

import torch

from pdd_ray.config import to_dict
from pdd_ray.distill.gradient_matching import PRESETS
from pdd_ray.distill.methods.base import BaseMethod, MatcherContext
from pdd_ray.distill.methods.registry import METHODS
from pdd_ray.errors import UserError
from pdd_ray.models import model_factory

# IDC's evaluation (evaluate_idc.py / train.py) and its networks' DSA: batch 64, MultiStepLR x0.2 at
# 2/3 and 5/6, lr 0.01, CutMix p 0.5 (argument.py mix_p for CIFAR / (Fashion-)MNIST), DSA without
# cutout (argument.py removes it when mixup is 'cut') in IDC's DiffAug mode.
IDC_EVAL = {"batch_size": 64, "schedule": "multistep", "cutmix": 0.5, "lr": 0.01}
IDC_AUGMENT = {"dsa": True, "strategy": "color_crop_flip_scale_rotate", "mode": "idc"}


class GradientMatchingMethod(BaseMethod):
    """Per-class gradient matching in the papers' outer/inner loop (``pdd_ray.distill.gradient_matching``)."""

    section = "gm"

    def preset(self) -> dict:
        return {"gm": to_dict(PRESETS[self.name])}

    def factor(self, config) -> int:
        return config.gm.factor

    def check(self, config) -> None:
        gm = config.gm
        gm.validate()
        if config.stages.forgetting_curriculum and config.buffer is None:
            raise UserError("stages.forgetting_curriculum with a gradient-matching base needs buffer= pointing "
                            "at an expert buffer built with track_forgetting=true")
        if (gm.image_space == "pixel" or gm.clamp) and _uses_zca(config):
            raise UserError("gm.image_space=pixel and gm.clamp need mean/std preprocessing; with data.zca=true set "
                            "gm.image_space=normalised gm.clamp=false")
        for strategy in (gm.match_augment, gm.net_augment):
            if strategy is not None:
                _dsa_config(strategy, gm.match_mode or config.augment.mode)

    def augment(self, config):
        """The siamese matching augmentation (None when ``augment.dsa`` is off)."""
        if not config.augment.dsa:
            return None
        gm = config.gm
        from pdd_ray.augment import DSA
        return DSA(_dsa_config(gm.match_augment or config.augment.strategy, gm.match_mode or config.augment.mode,
                               batch=gm.match_batch))

    def net_augment(self, config):
        """The per-sample augmentation of the matching network's training (None when off)."""
        if not config.augment.dsa:
            return None
        gm = config.gm
        from pdd_ray.augment import DSA
        strategy = gm.net_augment or gm.match_augment or config.augment.strategy
        return DSA(_dsa_config(strategy, gm.match_mode or config.augment.mode, batch=False))

    def build_matcher(self, ctx: MatcherContext):
        from pdd_ray.distill.gradient_matching import GradientMatcher
        config, data = ctx.config, ctx.data
        make_model = model_factory(config.model, data.image_shape, data.num_classes, ctx.device)
        real = data.train if ctx.allowed is None else data.train.subset(ctx.allowed)  # the stage's partition
        transition = ctx.earlier and config.stages.transitions  # the net first learns the earlier sets
        grad_scale, bounds = pixel_space(config, data)
        return GradientMatcher(config.gm, real, make_model, self.augment(config), ctx.device,
                               warmup=self._warmup(config, ctx.earlier) if transition else None,
                               seed=config.seed * 1000 + ctx.index, comm=ctx.comm,
                               net_augment=self.net_augment(config), grad_scale=grad_scale, bounds=bounds)

    @staticmethod
    def _warmup(config, earlier: list):
        """A fresh matching network first trains on the earlier sets under the run's evaluation protocol.

        ``gm.warmup: progressive`` (IDC ``distill_idc.py``): on U_1, then U_2, …, U_{i-1}, each phase
        with a fresh optimizer (IDC's ``train_only`` per earlier interval); ``union``: one phase on U_{i-1}.
        Each phase trains ``gm.warmup_epochs`` (``stages.eval_epochs`` when 0).
        """
        from pdd_ray.evaluation import EvalProtocol
        epochs = config.gm.warmup_epochs or config.stages.eval_epochs
        protocol = EvalProtocol.from_config(config.eval, config.augment,
                                            precision=config.precision).replace(epochs=epochs)
        progressive = config.gm.warmup == "progressive"

        def warmup(net):
            if progressive:
                for phase in protocol.phases(earlier, "progressive"):
                    protocol.train(net, [phase])  # optimizer=None: a fresh SGD per earlier set
            else:
                protocol.train(net, protocol.phases(earlier, "union"))
        return warmup


def pixel_space(config, data) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """(gradient scale, clamp bounds) of a run in the images' normalised space.

    ``image_space: pixel``: channel c's gradient is scaled by ``tune / std_c²`` (an SGD step of
    ``lr_img`` on [0, 1] pixels, written in normalised space); ``tune`` is IDC's ``ipc/10 x
    (H·W / 32²)`` when ``gm.lr_img_tune``. Bounds: [0, 1] pixels, ``((0 - m_c) / s_c, (1 - m_c) / s_c)``.
    """
    gm = config.gm
    _, height, width = data.image_shape
    tune = gm.lr_img_factor(config.stages.ipc, height, width)
    pre = data.preprocessor
    mean, std = pre.mean.view(1, -1, 1, 1).float(), pre.std.view(1, -1, 1, 1).float()
    identity = pre.zca is None and pre.normalise
    if gm.image_space == "pixel":
        scale = tune / std.square() if identity else None
    else:
        scale = None if tune == 1.0 else torch.full_like(std, tune)
    bounds = ((0.0 - mean) / std, (1.0 - mean) / std) if gm.clamp and identity else None
    return scale, bounds


def _uses_zca(config) -> bool:
    from pdd_ray.data.registry import get_spec
    zca = config.data.zca
    if zca is None:
        zca = bool(getattr(get_spec(config.data.dataset), "zca", False))
    return bool(zca)


def _dsa_config(strategy: str, mode: str, batch: bool = False):
    from pdd_ray.augment import DSAConfig
    return DSAConfig(strategy, mode, batch)


class IDC(GradientMatchingMethod):
    """IDC (Kim et al. 2022): multi-formation, conv-weight matching, networks trained on real data."""

    name = "idc"

    def preset(self) -> dict:
        # IDC normalises by mean/std and never ZCA-whitens (its images live in [0, 1]).
        return {**super().preset(), "eval": dict(IDC_EVAL), "augment": dict(IDC_AUGMENT), "data": {"zca": False}}


class DSA(GradientMatchingMethod):
    """DSA (Zhao & Bilen 2021): DC with siamese augmentation."""

    name = "dsa"

    def check(self, config) -> None:
        super().check(config)
        if not config.augment.dsa:
            raise UserError("method=dsa needs augment.dsa=true (without it, it is method=dc)")


class DC(GradientMatchingMethod):
    """DC (Zhao et al. 2021): gradient matching without augmentation."""

    name = "dc"

    def augment(self, config):
        return None

    def net_augment(self, config):
        return None


for _entry in (IDC(), DSA(), DC()):
    METHODS.register(_entry.name)(_entry)
