"""Gradient matching as PDD bases: IDC, DSA and DC (one matcher, three presets).

Each entry's preset fills the ``gm`` section under the user's values, so
``method=dsa gm.lr_img=0.05`` is DSA with that image lr.
"""

from __future__ import annotations

from pdd_ray.config import to_dict
from pdd_ray.distill.gradient_matching import PRESETS
from pdd_ray.distill.methods.base import BaseMethod, MatcherContext
from pdd_ray.distill.methods.registry import METHODS
from pdd_ray.errors import UserError


class GradientMatchingMethod(BaseMethod):
    """Per-class gradient matching on a network trained on real data between iterations."""

    section = "gm"

    def preset(self) -> dict:
        return {"gm": to_dict(PRESETS[self.name])}

    def factor(self, config) -> int:
        return config.gm.factor

    def check(self, config) -> None:
        config.gm.validate()
        if config.stages.forgetting_curriculum and config.buffer is None:
            raise UserError("stages.forgetting_curriculum with a gradient-matching base needs buffer= pointing "
                            "at an expert buffer built with track_forgetting=true")

    def build_matcher(self, ctx: MatcherContext):
        from pdd_ray.distill.gradient_matching import GradientMatcher
        from pdd_ray.jobs.common import model_factory
        config, data = ctx.config, ctx.data
        make_model = model_factory(config.model, data.image_shape, data.num_classes, ctx.device)
        real = data.train if ctx.allowed is None else data.train.subset(ctx.allowed)  # the stage's partition
        augment = self.augment(config)
        transition = ctx.earlier and config.stages.transitions  # the net first learns the earlier sets
        return GradientMatcher(config.gm, real, make_model, augment, ctx.device,
                               warmup=self._warmup(config, ctx.earlier, augment) if transition else None,
                               seed=config.seed * 1000 + ctx.index, comm=ctx.comm)

    @staticmethod
    def _warmup(config, earlier: list, augment):
        """The matching network first trains on the union of the earlier sets (evaluation protocol's recipe)."""
        from pdd_ray.evaluation import EvalProtocol
        protocol = EvalProtocol.from_config(config.eval).replace(epochs=config.stages.eval_epochs, augment=augment)

        def warmup(net):
            protocol.train(net, protocol.phases(earlier, "union"))
        return warmup


class IDC(GradientMatchingMethod):
    """IDC (Kim et al. 2022): multi-formation, conv-weight matching."""

    name = "idc"


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


for _entry in (IDC(), DSA(), DC()):
    METHODS.register(_entry.name)(_entry)
