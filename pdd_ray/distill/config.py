"""The PDD run config: stages, the base method's section, experts, data, model, evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from pdd_ray.config import AugmentConfig, DataConfig, EvalConfig, ModelConfig, check_device, merge_under
from pdd_ray.distill.gradient_matching import GMConfig
from pdd_ray.distill.methods import METHODS, create_method
from pdd_ray.distill.mtt import MTTConfig
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import ExpertsConfig
from pdd_ray.parallel.config import ParallelConfig
from pdd_ray.precision import check_precision
from pdd_ray.tracking import TrackingConfig, check_backends

VALIDATION_STARTS = ("progressive", "scratch")
# Upper limits, far above any published setting (IPC 50 x 5 stages, 5000 iterations): a typo such as
# stages.ipc=1000000 ends in one line before any compute. The data sets a tighter limit on the IPC
# (a class's training images), checked once the data is loaded (``driver.check_data_fits``).
LIMITS = {"num_stages": 1000, "ipc": 10_000, "iterations": 10_000_000, "val_nets": 1000, "eval_epochs": 100_000}


@dataclass
class StagesConfig:
    """P stages of ``ipc`` images per class each, and the paper's ablation switches."""

    num_stages: int = 5
    ipc: int = 2
    iterations: int = 5000
    # Validation check, which picks each stage's best iterate (reference: every 100 iterations,
    # 5 nets, 1000 epochs). The nets continue from where progressive training on U_1 … U_{i-1}
    # ends under the evaluation protocol (``validation_start: scratch``: union training from a fresh net).
    eval_every: int = 100
    eval_epochs: int = 1000  # epochs of the candidate's phase (U_{i-1} ∪ S_i)
    val_nets: int = 5
    validation_start: str = "progressive"
    checkpoint_every: int = 100
    conditioning: bool = True  # off: S_i is matched alone, as if no earlier stage existed
    transitions: bool = True  # off: every stage reuses the stage-1 (random-init) experts
    # Stage i (1-based) distils the examples forgotten in [w(i-1), w·i) times (paper Sec. 5, Table 6).
    forgetting_curriculum: bool = False
    forgetting_bin_width: float = 10.0
    lr_min: float = 1e-6  # the learned lr is kept at least this large

    def validate(self) -> None:
        for name in ("num_stages", "ipc", "iterations", "eval_every", "eval_epochs", "val_nets", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"stages.{name} must be >= 1, got {getattr(self, name)}")
            if getattr(self, name) > LIMITS.get(name, getattr(self, name)):
                raise UserError(f"stages.{name} must be <= {LIMITS[name]}, got {getattr(self, name)}")
        if self.lr_min <= 0:
            raise UserError(f"stages.lr_min must be > 0, got {self.lr_min}")
        if self.validation_start not in VALIDATION_STARTS:
            raise UserError(f"stages.validation_start must be one of {', '.join(VALIDATION_STARTS)}, "
                            f"got '{self.validation_start}'")
        if self.forgetting_bin_width <= 0:
            raise UserError(f"stages.forgetting_bin_width must be > 0, got {self.forgetting_bin_width}")


@dataclass
class DistillConfig:
    """``pdd-ray run`` / ``pdd-ray distill``. ``experts.data/model/augment/out`` follow the top level."""

    out: str = "runs/pdd"
    method: str = "mtt"
    seed: int = 0
    device: str = "auto"
    # Compute precision, fp32 | bf16 | auto (bf16 where the hardware multiplies bf16 natively: pdd_ray.precision).
    # The run resolves it once into OUT/precision.json; a resumed run keeps it.
    precision: str = "fp32"
    address: str | None = None
    buffer: str | None = None  # an existing stage-1 expert buffer (default: OUT/experts/stage_1)
    evaluate: bool = True  # final test-set evaluation and report
    stages: StagesConfig = field(default_factory=StagesConfig)
    mtt: MTTConfig = field(default_factory=MTTConfig)
    gm: GMConfig = field(default_factory=GMConfig)  # the preset of ``method`` under the user's values
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(mode="progressive"))
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    logging: list[str] = field(default_factory=list)  # trackers: tensorboard, mlflow, wandb (pdd_ray.tracking)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @classmethod
    def with_presets(cls, data: dict) -> dict:
        """The base method's preset laid under the user's values (``method=dsa gm.lr_img=0.05`` is DSA)."""
        name = data.get("method", cls.method)
        return merge_under(create_method(name).preset(), data) if name in METHODS else data

    @property
    def base(self):
        """The base method's registry entry."""
        return create_method(self.method)

    def validate(self) -> None:
        base = self.base  # a UserError listing the methods for an unknown name
        check_device(self.device)
        check_precision(self.precision)
        if self.data.val_size < 1:
            raise UserError("data.val_size must be >= 1: each stage's best iteration is chosen on the validation split")
        base.check(self)
        self._check_parallel()
        check_backends(self.logging)

    def _check_parallel(self) -> None:
        p = self.parallel
        if p.split == "batch" and not self.base.shards_batch:
            raise UserError(f"parallel.split=batch is for method=mtt; {self.method} splits by class (items)")
        if p.workers > 1 and p.use_gpu and self.device == "cpu":
            raise UserError("parallel.use_gpu=true contradicts device=cpu")
        if p.workers > 1 and not p.use_gpu and self.device.startswith("cuda"):
            raise UserError(f"device={self.device} needs parallel.use_gpu=true (Ray hides GPUs from CPU workers)")
