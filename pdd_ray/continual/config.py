"""``ContinualConfig``: the class split, the memory per class, the memory builders, the evaluation.

A *memory builder* turns the training data of one phase's classes into that
phase's memory, ``memory.ipc`` images per class:

- a registered base method (``mtt``, ``idc``, ``dsa``, ``dc``) with ``stages`` PDD stages
  of ``memory.ipc / stages`` images per class each (``stages: 1`` is the plain method);
  its run config is the top-level ``distill:`` mapping (any ``DistillConfig`` keys),
  then the builder's own ``run:`` mapping over it;
- a coreset selector (``random``, ``herding``, ``k-center``, ``forgetting``) choosing
  ``memory.ipc`` real images per class, scored as the top-level ``selection:`` says.

The data, the network, the augmentation, the evaluation protocol, the seed and the
device are the top level's and the same for every builder, so builders compare at
equal memory under one protocol. Every builder's run config is built and validated
here, before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pdd_ray.config import (AugmentConfig, DataConfig, EvalConfig, ModelConfig, SelectionConfig, check_device,
                            from_dict, merge_under, to_dict, validate)
from pdd_ray.errors import UserError

EXECUTORS = ("process", "ray")
# Set by the continual job for every builder (the phase decides them): a builder may not set them itself.
OWNED_KEYS = ("out", "data", "model", "augment", "eval", "method", "seed", "device", "address", "evaluate",
              "buffer")


@dataclass
class PhasesConfig:
    """How the classes are split into phases: ``num_phases`` equal groups of a class order."""

    num_phases: int = 5
    class_order: list[int] | None = None  # a permutation of the dataset's classes; None: seeded permutation
    order_seed: int | None = None  # seed of that permutation (None: the run's seed)

    def validate(self) -> None:
        if self.num_phases < 1:
            raise UserError(f"phases.num_phases must be >= 1, got {self.num_phases}")
        if self.class_order is not None and len(set(self.class_order)) != len(self.class_order):
            raise UserError("phases.class_order lists a class twice")


@dataclass
class MemoryConfig:
    """How much a phase keeps: ``ipc`` images per class, whatever the builder."""

    ipc: int = 10

    def validate(self) -> None:
        if self.ipc < 1:
            raise UserError(f"memory.ipc must be >= 1, got {self.ipc}")


@dataclass
class BuilderConfig:
    """One memory builder: a base method with PDD stages, or a coreset selector."""

    method: str = "mtt"
    name: str | None = None  # the row in the tables; default: derived from method and stages
    stages: int = 1  # PDD stages (base methods only); per-stage IPC = memory.ipc / stages
    run: dict[str, Any] = field(default_factory=dict)  # DistillConfig keys over the top-level ``distill``

    @property
    def is_coreset(self) -> bool:
        """True for a selector of real images, False for a distillation method."""
        from pdd_ray.selection import SELECTORS
        return self.method in SELECTORS

    @property
    def label(self) -> str:
        """The builder's name in tables and directories."""
        if self.name:
            return self.name
        if self.is_coreset or self.stages == 1:
            return self.method
        return f"pdd_{self.method}_{self.stages}stages"

    def validate(self) -> None:
        from pdd_ray.distill.methods import METHODS
        from pdd_ray.selection import SELECTORS
        if self.method not in METHODS and self.method not in SELECTORS:
            raise UserError(f"unknown memory builder '{self.method}'; choose a base method "
                            f"({', '.join(METHODS.names())}) or a coreset ({', '.join(SELECTORS.names())})")
        if self.stages < 1:
            raise UserError(f"builder {self.label}: stages must be >= 1, got {self.stages}")
        if self.is_coreset and (self.stages != 1 or self.run):
            raise UserError(f"builder {self.label}: a coreset takes no stages or run (set selection.* instead)")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise UserError(f"builder name '{self.name}' must be a plain directory name")


@dataclass
class ContinualConfig:
    """``pdd-ray continual``: class-incremental learning with distilled (or selected) memories."""

    out: str = "runs/continual"
    seed: int = 0
    device: str = "auto"
    address: str | None = None
    # Where the phases' memories are built: here one after another, or as parallel Ray tasks
    # (phases are independent until evaluation); the same sets either way.
    executor: str = "process"
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    builders: list[BuilderConfig] = field(default_factory=lambda: [BuilderConfig("mtt", stages=5),
                                                                   BuilderConfig("herding")])
    distill: dict[str, Any] = field(default_factory=dict)  # DistillConfig keys shared by the distillation builders
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # the coreset scorer (ipc: memory.ipc)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(mode="progressive"))
    # True: every builder's networks train as many epochs in total as the builder with the most stages
    # (one union phase for a one-stage memory), so memories compare at equal training budget too.
    equal_budget: bool = True

    def validate(self) -> None:
        check_device(self.device)
        if self.executor not in EXECUTORS:
            raise UserError(f"executor must be one of {', '.join(EXECUTORS)}, got '{self.executor}'")
        if self.cpus_per_task <= 0 or self.gpus_per_task < 0:
            raise UserError("cpus_per_task must be > 0 and gpus_per_task >= 0")
        if self.executor == "ray" and self.device.startswith("cuda") and self.gpus_per_task == 0:
            raise UserError("executor=ray with device=cuda needs gpus_per_task > 0 (Ray hides GPUs otherwise)")
        if not self.builders:
            raise UserError("builders is empty: name at least one memory builder")
        for builder in self.builders:  # a list: ``config.validate`` does not reach into it
            builder.validate()
        labels = [b.label for b in self.builders]
        if len(set(labels)) != len(labels):
            raise UserError(f"two builders are both named '{next(x for x in labels if labels.count(x) > 1)}'; "
                            "give one a name")
        counts = sorted({b.stages for b in self.builders if b.stages > 1})
        if self.equal_budget and len(counts) > 1:
            raise UserError(f"equal_budget needs the multi-stage builders to share one stage count, got {counts}; "
                            "set equal_budget=false")
        for builder in self.builders:
            if not builder.is_coreset:
                self.run_config(builder)  # built and validated now, not after the first phase
        self._check_classes()

    def _check_classes(self) -> None:
        from pdd_ray.data.registry import DATASETS
        classes = DATASETS.get(self.data.dataset).num_classes
        if classes is not None:  # else (image folders) checked once the data is loaded, still before compute
            check_split(self.phases, classes)

    # ------------------------------------------------------------ the builders' configs

    def run_config(self, builder: BuilderConfig, out: str | None = None):
        """The ``DistillConfig`` a distillation builder runs each phase with (validated)."""
        from pdd_ray.distill.config import DistillConfig
        user = merge_under(self.distill, builder.run)
        owned = sorted(set(user) & set(OWNED_KEYS))
        if owned:
            raise UserError(f"builder {builder.label}: '{owned[0]}' is set by the continual config's top level, "
                            "not in distill: / run:")
        stages = dict(user.get("stages") or {})
        if "num_stages" in stages or "ipc" in stages:
            raise UserError(f"builder {builder.label}: set the builder's stages and memory.ipc, "
                            "not stages.num_stages / stages.ipc")
        if self.memory.ipc % builder.stages:
            raise UserError(f"builder {builder.label}: memory.ipc {self.memory.ipc} is not a multiple of its "
                            f"{builder.stages} stages")
        workers = (user.get("parallel") or {}).get("workers", 1)
        if workers != 1:
            raise UserError(f"builder {builder.label}: parallel.workers must be 1 (the phases are the parallelism)")
        stages.update(num_stages=builder.stages, ipc=self.memory.ipc // builder.stages)
        data = {**user, "stages": stages, "method": builder.method, "evaluate": False, "seed": self.seed,
                "device": self.device, "address": self.address, "out": out or self.out,
                "data": to_dict(self.data), "model": to_dict(self.model), "augment": to_dict(self.augment),
                "eval": to_dict(self.eval)}
        config = from_dict(DistillConfig, data, f"builder {builder.label}: ")
        validate(config)
        return config

    def selection_config(self) -> SelectionConfig:
        """The coreset builders' selection settings, at the memory's IPC."""
        return SelectionConfig(**{**to_dict(self.selection), "ipc": self.memory.ipc})


def check_split(phases: PhasesConfig, num_classes: int) -> None:
    """The class order is a permutation of the classes and the phases split it evenly (UserError if not)."""
    if num_classes % phases.num_phases:
        raise UserError(f"phases.num_phases {phases.num_phases} does not divide the {num_classes} classes")
    order = phases.class_order
    if order is not None and sorted(order) != list(range(num_classes)):
        raise UserError(f"phases.class_order must list each of the {num_classes} classes 0..{num_classes - 1} "
                        "exactly once")


__all__ = ["BuilderConfig", "ContinualConfig", "MemoryConfig", "PhasesConfig", "check_split"]
