"""The sweep config: which run config to start from, what to vary, and how Tune runs the trials.

Loaded like every other config (YAML + ``key=value``); the per-point run
configs are checked later by ``pdd_ray.sweep.plan`` before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdd_ray.config import from_dict, load_config, parse_override, read_yaml
from pdd_ray.errors import UserError
from pdd_ray.storage import is_uri
from pdd_ray.tracking import TrackingConfig, check_backends

SAMPLE_TYPES = ("uniform", "loguniform", "choice", "randint")
SPEC_FIELDS = {"type", "low", "high", "values"}
SCHEDULERS = ("fifo", "asha")
# Selection is on the validation split only; the test accuracy is reported, never optimised.
METRICS = ("val_accuracy",)


@dataclass
class SampleSpec:
    """One sampled key: ``uniform``/``loguniform`` in [low, high], ``randint`` in [low, high), or ``choice``."""

    type: str = "uniform"
    low: float | None = None
    high: float | None = None
    values: list | None = None

    def check(self, key: str) -> None:
        """Raise UserError when the distribution cannot be sampled."""
        where = f"sample.{key}"
        if self.type not in SAMPLE_TYPES:
            raise UserError(f"{where}.type must be one of {', '.join(SAMPLE_TYPES)}, got '{self.type}'")
        if self.type == "choice":
            if not self.values:
                raise UserError(f"{where}: type choice needs a non-empty 'values' list")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise UserError(f"{where}: type {self.type} needs low < high, got low={self.low}, high={self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise UserError(f"{where}: loguniform needs low > 0, got {self.low}")
        if self.type == "randint" and (self.low != int(self.low) or self.high != int(self.high)):
            raise UserError(f"{where}: randint needs whole low/high, got {self.low}, {self.high}")

    def ends(self) -> list:
        """Representative values (range ends, every choice) that every trial config must accept."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "randint":
            return [int(self.low), int(self.high) - 1]  # high is exclusive, as in Tune
        return [self.low, self.high]


@dataclass
class AshaConfig:
    """ASHA early stopping; time is counted in validation checks."""

    grace_period: int = 1
    reduction_factor: float = 2.0

    def validate(self) -> None:
        """Raise UserError on a grace period below 1 or a reduction factor not above 1."""
        if self.grace_period < 1:
            raise UserError(f"asha.grace_period must be >= 1, got {self.grace_period}")
        if self.reduction_factor <= 1:
            raise UserError(f"asha.reduction_factor must be > 1, got {self.reduction_factor}")


@dataclass
class SweepConfig:
    """``pdd-ray sweep``: a base run config, what to vary (grid / sampled), and the Tune settings."""

    base: str | None = None  # a DistillConfig YAML; relative to the sweep file's folder (see ``find_base``)
    overrides: list[str] = field(default_factory=list)  # key=value applied to every trial
    out: str = "runs/sweep"  # sweep directory (made absolute), or a URI (s3://...) for Tune's state
    work_dir: str | None = None  # buffer, trial runs and results when out is a URI (default: out)
    grid: dict[str, Any] = field(default_factory=dict)  # dotted key -> list of values
    sample: dict[str, Any] = field(default_factory=dict)  # dotted key -> SampleSpec fields
    num_samples: int = 1
    total_ipc: int | None = None  # set: stages.ipc = total_ipc / stages.num_stages per trial
    scheduler: str = "fifo"
    asha: AshaConfig = field(default_factory=AshaConfig)
    metric: str = "val_accuracy"
    mode: str = "max"
    max_concurrent_trials: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional: 0.25 puts four trials on one GPU
    # Extra bundles per MTT trial, one transition expert each, so a trial's experts train in parallel.
    # None: one per transition expert (experts.num_experts), as many of them as fit the cluster beside the trial.
    experts_per_trial: int | None = None
    address: str | None = None  # Ray cluster; None: RAY_ADDRESS or a local Ray
    seed: int = 0  # seeds the sampling of ``sample`` (trials keep the run config's seed)
    # Ray Tune's logger callbacks (tensorboard, mlflow, wandb): every trial's reported metrics. Each trial's
    # own loss, lr and image grids: ``logging`` in the base run config (its trial directory).
    logging: list[str] = field(default_factory=list)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        # Nested YAML (grid: {stages: {num_stages: [..]}}) and dotted CLI overrides both end up flat here.
        self.grid = flatten_keys(self.grid, is_leaf=lambda v: not isinstance(v, dict), where="grid")
        flat = flatten_keys(self.sample, is_leaf=lambda v: isinstance(v, dict) and set(v) <= SPEC_FIELDS,
                            where="sample")
        self.sample = {k: v if isinstance(v, SampleSpec) else from_dict(SampleSpec, v, f"sample.{k}.")
                       for k, v in flat.items()}

    def validate(self) -> None:
        """Raise UserError naming the first bad field (every trial's run config is checked later, in the plan)."""
        if self.base is None:
            raise UserError("base must name a run config YAML (a DistillConfig), e.g. "
                            "base: pdd_idc_fashion_mnist_ipc10.yaml (next to the sweep file)")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        for key, spec in self.sample.items():
            spec.check(key)
        both = sorted(set(self.grid) & set(self.sample))
        if both:
            raise UserError(f"'{both[0]}' is both in grid and in sample; pick one")
        self._check_numbers()
        check_backends(self.logging)
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got '{self.scheduler}'")
        if self.metric not in METRICS:
            raise UserError(f"metric must be val_accuracy (the test accuracy is reported, never used for "
                            f"selection), got '{self.metric}'")
        if self.mode not in ("max", "min"):
            raise UserError(f"mode must be max or min, got '{self.mode}'")
        if is_uri(self.out) and self.work_dir is None:
            raise UserError(f"out={self.out} is a URI: set work_dir= to a (shared) directory for the expert "
                            "buffer, the trial run directories and the result tables")

    def _check_numbers(self) -> None:
        checks = [(self.num_samples >= 1, f"num_samples must be >= 1, got {self.num_samples}"),
                  (self.total_ipc is None or self.total_ipc >= 1, f"total_ipc must be >= 1, got {self.total_ipc}"),
                  (self.max_concurrent_trials is None or self.max_concurrent_trials >= 1,
                   f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}"),
                  (self.cpus_per_trial > 0, f"cpus_per_trial must be > 0, got {self.cpus_per_trial}"),
                  (self.gpus_per_trial >= 0, f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}"),
                  (self.experts_per_trial is None or self.experts_per_trial >= 1,
                   f"experts_per_trial must be >= 1, got {self.experts_per_trial}"),
                  # Ray accepts fractions of one GPU or whole GPUs, nothing in between.
                  (self.gpus_per_trial <= 1 or self.gpus_per_trial == int(self.gpus_per_trial),
                   f"gpus_per_trial above 1 must be whole, got {self.gpus_per_trial}")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.num_samples > 1 and not self.sample:
            raise UserError("num_samples > 1 without a sample section repeats identical trials; "
                            "sweep the run seed instead (grid: {seed: [0, 1, 2]})")


def flatten_keys(mapping: dict, is_leaf, where: str, prefix: str = "") -> dict:
    """``{"a": {"b": leaf}}`` -> ``{"a.b": leaf}``, stopping at values where ``is_leaf(value)``."""
    if not isinstance(mapping, dict):
        raise UserError(f"'{where}' must be a mapping of dotted keys, got {mapping!r}")
    flat: dict = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not is_leaf(value):
            for sub, leaf in flatten_keys(value, is_leaf, where, name + ".").items():
                _merge(flat, sub, leaf)
        else:
            _merge(flat, name, value)
    return flat


def _merge(flat: dict, key: str, value) -> None:
    # A dotted CLI override (sample.mtt.lr_img.high=500) refines the YAML's entry instead of replacing it.
    old = flat.get(key)
    flat[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value


def load_sweep_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> SweepConfig:
    """Load and validate a SweepConfig; ``out``/``work_dir``/``base`` become absolute."""
    config = load_config(SweepConfig, path, overrides)
    if not is_uri(config.out):
        config.out = str(Path(config.out).expanduser().resolve())
    if config.work_dir is not None:
        config.work_dir = str(Path(config.work_dir).expanduser().resolve())
    # base=... typed on the command line is a path the user typed here: the working directory's.
    typed = any(parse_override(item)[0] == "base" for item in overrides)
    config.base = str(find_base(config.base, None if typed else path))
    return config


def find_base(base: str, sweep_file: str | Path | None) -> Path:
    """The base run config: relative to the folder of the sweep YAML that names it, like an include.

    So a sweep file and its base travel together and run from any directory. A
    relative ``base`` not found there is still looked for in the working directory
    (where sweep files once named it from, e.g. ``base: tune_configs/x.yaml``); with
    no sweep file (``base=`` typed on the command line) the working directory is the
    only place.
    """
    path = Path(base).expanduser()
    candidates = [path]
    if sweep_file is not None and not path.is_absolute():
        candidates.insert(0, Path(sweep_file).parent / path)
    candidates = list(dict.fromkeys(candidates))  # a sweep file in the working directory: one place, said once
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise UserError(f"base config not found: {base} (looked for {', '.join(map(str, candidates))})")


def base_dict(config: SweepConfig) -> dict:
    """The base run config as a plain mapping (read once, so trials never depend on the file)."""
    return read_yaml(config.base)
