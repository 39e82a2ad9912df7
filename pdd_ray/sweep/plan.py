"""The resolved sweep: every trial's run config, checked before any compute, and where things live.

    WORK/sweep.json          the sweep config and its fingerprint (a changed sweep never mixes in)
    WORK/experts/stage_1/    the stage-1 expert buffer every MTT trial shares
    WORK/trials/<name>/      each trial's PDD run directory (resumable through the stage checkpoints)
    OUT/tune/                Tune's experiment state (OUT may be a URI; WORK is OUT unless work_dir is set)
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pdd_ray.config import from_dict, parse_override, set_dotted, to_dict, validate
from pdd_ray.distill.config import DistillConfig
from pdd_ray.errors import UserError
from pdd_ray.storage import is_uri
from pdd_ray.sweep.config import SweepConfig, base_dict
from pdd_ray.sweep.space import StepCounter, check_points, trial_name, with_derived_ipc

TUNE_NAME = "tune"
# Set by the sweep itself for every trial (a fixed buffer= may come from the base or the overrides).
RESERVED_KEYS = ("out", "buffer", "address")
OVERRIDE_RESERVED = ("out", "address")
# What the shared stage-1 buffer is built from: sweeping these would need one buffer per trial.
BUFFER_SECTIONS = ("experts", "data", "model", "augment")
# Changing these between runs of the same sweep is fine: they say where, not what. (Resources and
# concurrency are not here: a restored Tune experiment keeps the ones it started with.) Trackers only watch.
FINGERPRINT_EXCLUDES = ("out", "work_dir", "address", "logging", "tracking")


@dataclass
class SweepPlan:
    """A validated sweep: the base mapping, shared settings, paths and ASHA's horizon."""

    config: SweepConfig
    base: dict  # the base run config as read from its YAML, with the sweep's overrides applied
    work_dir: str
    storage_path: str  # absolute path or URI: Tune's storage_path
    buffer: str | None  # the stage-1 buffer MTT trials share (None: no MTT trial)
    build_buffer: bool  # the sweep builds ``buffer`` before Tune starts (False: the base named one)
    transition_experts: dict | None  # resources of one transition expert run inside a trial, if any
    max_steps: int  # the last ``step`` any trial reports (ASHA's max_t)
    expert_bundles: int = 1  # transition experts a trial trains at once (one bundle each)

    @property
    def experiment_path(self) -> str:
        """Where Tune keeps this sweep's experiment state."""
        return f"{self.storage_path.rstrip('/')}/{TUNE_NAME}"

    def run_config(self, params: dict, out: str | None = None, buffer: str | None = None) -> DistillConfig:
        """The validated DistillConfig of one point (``params``: swept keys, before derived IPC)."""
        data = copy.deepcopy(self.base)
        for key, value in with_derived_ipc(params, self.config.total_ipc, self._base_num_stages()).items():
            set_dotted(data, key, value)
        if out is not None:
            data["out"] = out
        if buffer is not None:
            data["buffer"] = buffer
        config = from_dict(DistillConfig, data)
        validate(config)
        return config

    def trial_config(self, params: dict) -> DistillConfig:
        """A trial's config: its own run directory under WORK/trials, the shared buffer for MTT."""
        needs_experts = self.run_config(params).base.needs_experts
        out = str(Path(self.work_dir) / "trials" / trial_name(params))
        return self.run_config(params, out=out, buffer=self.buffer if needs_experts else None)

    def _base_num_stages(self) -> int:
        return from_dict(DistillConfig, copy.deepcopy(self.base)).stages.num_stages

    def fingerprint(self) -> str:
        """sha256 of what decides the trials (sweep settings and the base run config)."""
        settings = {k: v for k, v in to_dict(self.config).items() if k not in FINGERPRINT_EXCLUDES}
        if settings.get("experts_per_trial") is None:
            settings.pop("experts_per_trial", None)  # sweeps recorded before the setting existed still resume
        settings["base"] = {k: v for k, v in self.base.items() if k not in ("logging", "tracking")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def make_plan(config: SweepConfig) -> SweepPlan:
    """Check the whole sweep (every grid point, the ends of every sampled range) and resolve paths."""
    base = _base_with_overrides(config)
    _check_swept_keys(config)
    work_dir = config.work_dir or config.out
    plan = SweepPlan(config=config, base=base, work_dir=work_dir, storage_path=config.out, buffer=None,
                     build_buffer=False, transition_experts=None, max_steps=0)
    configs = [_point_config(plan, params) for params in check_points(config)]
    _check_resources(config, configs)
    plan.max_steps = max(StepCounter(c.stages.iterations, c.stages.eval_every).final(c.stages.num_stages)
                         for c in configs)
    if any(c.base.needs_experts for c in configs):
        _share_buffer(plan, configs)
    return plan


def _base_with_overrides(config: SweepConfig) -> dict:
    data = base_dict(config)
    for item in config.overrides:
        key, value = parse_override(item)
        if key.split(".")[0] in OVERRIDE_RESERVED:
            raise UserError(f"overrides: '{key}' is set by the sweep (its own {key}=), not per run config")
        set_dotted(data, key, value)
    data.pop("out", None)  # each trial gets WORK/trials/<name>
    data.pop("address", None)  # trials run inside the sweep's Ray cluster
    if data.get("buffer") and not is_uri(data["buffer"]):
        data["buffer"] = str(Path(data["buffer"]).expanduser().resolve())  # trials run in their own cwd
    if isinstance(data.get("data"), dict) and data["data"].get("root"):
        data["data"]["root"] = str(Path(data["data"]["root"]).expanduser().resolve())
    return data


def _check_swept_keys(config: SweepConfig) -> None:
    swept = list(config.grid) + list(config.sample)
    for key in swept:
        if key.split(".")[0] in RESERVED_KEYS:
            raise UserError(f"'{key}' cannot be swept: the sweep sets it for every trial")
    if config.total_ipc is not None:
        if "stages.ipc" in swept or any(parse_override(o)[0] == "stages.ipc" for o in config.overrides):
            raise UserError("total_ipc derives stages.ipc for every trial; do not also set or sweep stages.ipc")
        if "stages.num_stages" in config.sample:
            raise UserError("with total_ipc, put stages.num_stages in grid (divisors of total_ipc), not in sample")


def _point_config(plan: SweepPlan, params: dict) -> DistillConfig:
    try:
        return plan.run_config(params)
    except UserError as exc:
        where = ", ".join(f"{k}={v}" for k, v in params.items())
        raise UserError(f"trial {{{where}}}: {exc}" if where else str(exc)) from None


def _check_resources(config: SweepConfig, configs: list[DistillConfig]) -> None:
    if any(c.parallel.workers > 1 for c in configs):
        # A trial's Ray Train worker group would need resources beyond the trial's own; trials are the parallelism.
        raise UserError("sweep trials run with parallel.workers=1: run more trials at once "
                        "(max_concurrent_trials, gpus_per_trial) instead of data-parallel workers per trial")
    if config.gpus_per_trial == 0 and any(c.device.startswith("cuda") for c in configs):
        raise UserError("device=cuda needs gpus_per_trial > 0 (e.g. 0.25 for four trials per GPU): "
                        "Ray hides GPUs from trials that ask for none")


def _share_buffer(plan: SweepPlan, configs: list[DistillConfig]) -> None:
    """MTT trials share one stage-1 buffer, so nothing it is built from may vary."""
    mtt = [c for c in configs if c.base.needs_experts]
    given = mtt[0].buffer
    if given is None:
        swept = list(plan.config.grid) + list(plan.config.sample)
        for key in swept:
            if key.split(".")[0] in BUFFER_SECTIONS:
                raise UserError(f"'{key}' cannot be swept with method=mtt: every trial shares one stage-1 expert "
                                f"buffer built from experts.*, data.*, model.* and augment.*; run one sweep per value")
    plan.buffer = given or str(Path(plan.work_dir) / "experts" / "stage_1")
    plan.build_buffer = given is None
    transitions = [c for c in mtt if c.stages.transitions and c.stages.num_stages > 1]
    if transitions:
        e = transitions[0].experts
        plan.transition_experts = {"CPU": e.cpus_per_expert, "GPU": e.gpus_per_expert}
        plan.expert_bundles = plan.config.experts_per_trial or max(c.experts.num_experts for c in transitions)
