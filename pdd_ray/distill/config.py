"""The PDD run config: stages, the base method's section, experts, data, model, evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from pdd_ray.config import AugmentConfig, DataConfig, EvalConfig, ModelConfig, check_device
from pdd_ray.distill.gradient_matching import PRESETS, GMConfig
from pdd_ray.distill.mtt import MTTConfig
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import ExpertsConfig
from pdd_ray.parallel.config import ParallelConfig

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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got '{self.method}'")
        check_device(self.device)
        if self.data.val_size < 1:
            raise UserError("data.val_size must be >= 1: each stage's best iteration is chosen on the validation split")
        if self.method == "mtt":
            self.mtt.validate()
            self._check_expert_epochs()
            if self.device.startswith("cuda") and self.experts.gpus_per_expert == 0:
                raise UserError("device=cuda needs experts.gpus_per_expert > 0 (Ray hides GPUs from tasks without one)")
        else:
            self.gm_config().validate()
        if self.method == "dsa" and not self.augment.dsa:
            raise UserError("method=dsa needs augment.dsa=true (without it, it is method=dc)")
        if self.stages.forgetting_curriculum:
            self._check_forgetting_source()
        self._check_parallel()

    def _check_parallel(self) -> None:
        p = self.parallel
        if p.split == "batch" and self.method != "mtt":
            raise UserError("parallel.split=batch is for method=mtt; gradient matching splits by class (items)")
        if p.split == "batch" and p.workers > 1 and not self.mtt.memory_saving:
            raise UserError("parallel.split=batch needs mtt.memory_saving=true (the sharded unroll is the adjoint one)")
        if p.split == "batch" and p.workers > 1 and (self.mtt.batch_syn or p.workers) < p.workers:
            raise UserError(f"parallel.split=batch with {p.workers} workers needs mtt.batch_syn >= {p.workers}")
        if p.workers > 1 and p.use_gpu and self.device == "cpu":
            raise UserError("parallel.use_gpu=true contradicts device=cpu")
        if p.workers > 1 and not p.use_gpu and self.device.startswith("cuda"):
            raise UserError(f"device={self.device} needs parallel.use_gpu=true (Ray hides GPUs from CPU workers)")

    def _check_expert_epochs(self) -> None:
        needed = self.mtt.max_start_epoch + self.mtt.expert_epochs + 1
        have = self.experts.recipe.num_snapshots
        if self.buffer is None and have < needed:
            raise UserError(f"experts keep {have} snapshots but matching needs {needed} "
                            f"(mtt.max_start_epoch + mtt.expert_epochs + 1): raise experts.recipe.epochs "
                            "(and store_epochs) or lower mtt.max_start_epoch")

    def _check_forgetting_source(self) -> None:
        if self.method == "mtt" and self.buffer is None and not self.experts.track_forgetting:
            raise UserError("stages.forgetting_curriculum needs experts.track_forgetting=true "
                            "(the stage-1 experts count the forgetting events)")
        if self.method != "mtt" and self.buffer is None:
            raise UserError("stages.forgetting_curriculum with a gradient-matching base needs buffer= pointing "
                            "at an expert buffer built with track_forgetting=true")

    def gm_config(self):
        """The gradient-matching section, or the method's preset when none was given."""
        return self.gm if self.gm is not None else PRESETS[self.method]
