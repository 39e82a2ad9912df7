"""The PDD run config: stages, the base method's section, experts, data, model, evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from pdd_ray.config import AugmentConfig, DataConfig, EvalConfig, ModelConfig
from pdd_ray.distill.gradient_matching import PRESETS, GMConfig
from pdd_ray.distill.mtt import MTTConfig
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import ExpertsConfig

METHODS = ("mtt", "idc", "dsa", "dc")


@dataclass
class StagesConfig:
    """P stages of ``ipc`` images per class each, and the paper's ablation switches."""

    num_stages: int = 5
    ipc: int = 2
    iterations: int = 5000
    eval_every: int = 500  # validation check (picks the best iteration of each stage)
    eval_epochs: int = 300  # training epochs of that check
    checkpoint_every: int = 100
    conditioning: bool = True  # off: S_i is matched alone, as if no earlier stage existed
    transitions: bool = True  # off: every stage reuses the stage-1 (random-init) experts
    forgetting_curriculum: bool = False  # stage i initialises from examples forgotten >= (i-1)*bin_width times
    forgetting_bin_width: float = 10.0
    lr_min: float = 1e-6  # the learned lr is kept at least this large

    def validate(self) -> None:
        for name in ("num_stages", "ipc", "iterations", "eval_every", "eval_epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"stages.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_min <= 0:
            raise UserError(f"stages.lr_min must be > 0, got {self.lr_min}")


@dataclass
class DistillConfig:
    """``pdd-ray run`` / ``pdd-ray distill``. ``experts.data/model/augment/out`` follow the top level."""

    out: str = "runs/pdd"
    method: str = "mtt"
    seed: int = 0
    device: str = "auto"
    address: str | None = None
    buffer: str | None = None  # an existing stage-1 expert buffer (default: OUT/experts/stage_1)
    evaluate: bool = True  # final test-set evaluation and report
    stages: StagesConfig = field(default_factory=StagesConfig)
    mtt: MTTConfig = field(default_factory=MTTConfig)
    gm: GMConfig | None = None  # None: the preset of ``method`` (idc / dsa / dc)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(mode="progressive"))

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.method == "mtt":
            self.mtt.validate()
        else:
            self.gm_config().validate()

    def gm_config(self):
        """The gradient-matching section, or the method's preset when none was given."""
        return self.gm if self.gm is not None else PRESETS[self.method]
