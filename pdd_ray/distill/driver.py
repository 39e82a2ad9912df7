"""The PDD stage driver: for each stage, the method's preparation -> S_i distilled against its matcher.

    OUT/experts/stage_<i>/     expert buffers (MTT): the transition chain (``transitions.py``)
    OUT/stages/stage_<i>.ckpt  the running stage's checkpoint
    OUT/synthetic/             the synthetic-set directory, one stage appended as each finishes

(every path: ``run_dir.RunDir``)

Everything method-specific is asked of the base method's registry entry
(``pdd_ray.distill.methods``). Finished stages are read back, never recomputed
or overwritten; the running stage resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import to_dict
from pdd_ray.data.bundle import DataBundle
from pdd_ray.distill.base import SyntheticState
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.curriculum import stage_partition
from pdd_ray.distill.init import init_from_real
from pdd_ray.distill.methods import MatcherContext
from pdd_ray.distill.reporting import StageReporter
from pdd_ray.distill.runners import StageHooks, create_stage_runner
from pdd_ray.distill.stage import StageSettings
from pdd_ray.distill.run_dir import RunDir
from pdd_ray.distill.validation import ProgressiveValidator, StartCache
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import identity as experts_identity
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.models import model_factory
from pdd_ray.precision import record_precision, resolve_precision
from pdd_ray.storage import is_uri
from pdd_ray.tracking import Tracker
from pdd_ray.visualize import save_image_grid


def load_or_start(config: DistillConfig, data: DataBundle) -> synset_io.SyntheticSet:
    """The finished stages so far (empty set on a fresh run)."""
    directory = RunDir.of(config).synthetic
    if (directory / "manifest.json").is_file():
        synset = synset_io.load(directory)
        if synset.dataset != data.name or synset.method != f"pdd:{config.method}":
            raise UserError(f"{directory} holds a {synset.method} set for {synset.dataset}; use another out=")
        if synset.config.get("fingerprint") != config_fingerprint(config):
            raise UserError(f"{directory} was distilled with a different config (stages, method, data, model or "
                            "seed changed); use another out= or delete the directory to start over")
        return synset
    return synset_io.SyntheticSet(data.name, data.num_classes, data.class_names, data.preprocessor, [],
                                  method=f"pdd:{config.method}",
                                  config={**to_dict(config), "fingerprint": config_fingerprint(config)},
                                  seed=config.seed)


# Settings that change what a stage computes; out/device/address/evaluation/worker count do not.
# Precision is guarded beside the fingerprint instead (OUT/precision.json): ``auto`` resolves per machine.
FINGERPRINT_EXCLUDES = ("out", "device", "precision", "address", "evaluate", "eval", "parallel", "logging", "tracking")
METHOD_SECTIONS = ("mtt", "gm")  # each method adds back its own (``BaseMethod.fingerprint``)


def config_fingerprint(config: DistillConfig, *extra) -> str:
    """sha256 of the settings that determine the distilled images, then of the ``extra`` buffers in order."""
    relevant = {k: v for k, v in to_dict(config).items() if k not in FINGERPRINT_EXCLUDES + METHOD_SECTIONS}
    relevant["data"] = {k: v for k, v in relevant["data"].items() if k not in ("root", "download")}
    relevant["experts"] = experts_identity(relevant["experts"])
    relevant.update(config.base.fingerprint(config))
    # The buffer as an absolute path: workers see absolute paths, and a relative one means the same place.
    relevant["buffer"] = config.buffer if config.buffer is None or is_uri(config.buffer) \
        else str(Path(config.buffer).resolve())
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())
    for buffer in extra:  # streamed: hashing the frozen union must not copy it
        digest.update(buffer)
    return digest.hexdigest()


def run_stages(config: DistillConfig, data: DataBundle, device: torch.device, progress: bool = True,
               on_iteration: Callable[[int, int], None] | None = None,
               on_validation: Callable[[int, int, float], None] | None = None,
               runner=None, tracker: Tracker | None = None) -> synset_io.SyntheticSet:
    """Distil every unfinished stage in order and return the full synthetic set.

    Hooks get the 0-based stage index first: ``on_iteration(stage, it)``,
    ``on_validation(stage, it, val_accuracy)``. ``runner``: who executes a stage
    (``pdd_ray.distill.runners``; default: what ``parallel.workers`` asks for).
    ``tracker``: where each step, check and finished stage is logged (``pdd_ray.distill.reporting``).
    ``config.precision`` is resolved here when a caller left it ``auto`` (``run_pdd`` settles and records it).
    """
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))
    check_data_fits(config, data)
    runner = runner or create_stage_runner(config)
    synset = load_or_start(config, data)
    rebuild_pictures(config, data, synset)  # a crash between a stage and its grid must not lose the grid
    if config.parallel.workers > 1:
        from pdd_ray.parallel.trainer import check_before_compute
        check_before_compute(config)  # not after minutes of expert training
    reporter = StageReporter(tracker, config.stages.num_stages, config.stages.iterations, config.tracking.every)
    for index in range(len(synset.stages), config.stages.num_stages):
        config.base.before_stage(config, data, index, progress, synset.stages)
        hooks = reporter.hooks(index, on_iteration, on_validation)
        stage = distill_one(config, data, synset, index, device, progress, hooks, runner)
        synset.stages.append(stage)
        paths = RunDir.of(config)
        synset_io.save(synset, paths.synthetic)  # stage files first, manifest last
        save_stage_picture(config, data, stage, index)
        reporter.stage_done(index, stage.info, stage.lr, paths.stage_picture(index))
    return synset


def check_data_fits(config: DistillConfig, data: DataBundle) -> None:
    """Refuse, before any compute, a stage that needs more real images per class than a class has."""
    if len(data.val) < data.num_classes:
        raise UserError(f"the validation split has {len(data.val)} images for {data.num_classes} classes; "
                        "raise data.val_size")
    factor = config.base.factor(config)
    per_class = torch.bincount(data.train.labels, minlength=data.num_classes)
    need = config.stages.ipc * factor * factor  # a multi-formation image starts from factor² real ones
    if need > int(per_class.min()):
        formed = f" x {factor}² (multi-formation)" if factor > 1 else ""
        raise UserError(f"stages.ipc={config.stages.ipc}{formed} needs {need} training images per class, but "
                        f"{data.name}'s smallest class has {int(per_class.min())} after the validation split: "
                        f"use stages.ipc <= {int(per_class.min()) // (factor * factor)}")


def save_stage_picture(config: DistillConfig, data: DataBundle, stage: synset_io.Stage, index: int) -> None:
    """``stage_<i>.png``: the stage as an image grid in pixel space."""
    pixels, labels = stage.training_data()
    save_image_grid(data.preprocessor.inverse(pixels), labels, RunDir.of(config).stage_picture(index),
                    data.class_names, title=f"stage {index + 1}: {config.method}, ipc {config.stages.ipc}")


def rebuild_pictures(config: DistillConfig, data: DataBundle, synset: synset_io.SyntheticSet) -> None:
    """Draw the grids of finished stages that have none (derived files are rebuilt, never trusted to exist)."""
    for index, stage in enumerate(synset.stages):
        if not RunDir.of(config).stage_picture(index).is_file():
            save_stage_picture(config, data, stage, index)


@dataclass
class StageJob:
    """Everything one worker needs to distil stage ``index``: built the same way on every worker."""

    state: SyntheticState
    matcher: object
    settings: StageSettings
    validate: Callable
    fingerprint: str
    factor: int
    checkpoint_path: Path


def prepare_stage(config: DistillConfig, data: DataBundle, finished: list, index: int, device: torch.device,
                  comm=None) -> StageJob:
    """Initial S_i, matcher, settings and validator of stage ``index`` (0-based), given the finished stages."""
    base = config.base
    earlier = finished[:index] if config.stages.conditioning else []
    factor = base.factor(config)
    generator = torch.Generator().manual_seed(config.seed * 1000 + index)
    allowed = stage_partition(config, data, index)
    images, labels = init_from_real(data.train, config.stages.ipc, factor, generator, allowed)
    frozen = _stored_union(earlier, data)
    state = SyntheticState(frozen[0].to(device), frozen[1].to(device), images.to(device).requires_grad_(True),
                           labels.to(device), _initial_lr(config, device))
    matcher = base.build_matcher(MatcherContext(config, data, finished[:index], index, device, allowed, comm))
    return StageJob(state, matcher, _settings(config, index), build_validator(config, data, earlier, labels, device),
                    stage_fingerprint(config, index, frozen[0]), factor,
                    RunDir.of(config).stage_checkpoint(index))


def stage_fingerprint(config: DistillConfig, index: int, frozen_images: torch.Tensor) -> str:
    """What a stage checkpoint must match to be resumed: the config and the earlier stages' images."""
    pixels = frozen_images.detach().cpu().contiguous().numpy().reshape(-1)  # 1-D: a byte view of any length
    return config_fingerprint(config, f"stage {index}".encode(), pixels.view(np.uint8))


def distill_one(config: DistillConfig, data: DataBundle, synset: synset_io.SyntheticSet, index: int,
                device: torch.device, progress: bool, hooks: StageHooks | None = None,
                runner=None) -> synset_io.Stage:
    """Distil stage ``index`` (0-based) conditioned on ``synset.stages[:index]``: assembled here, run by ``runner``."""
    runner = runner or create_stage_runner(config)
    job = prepare_stage(config, data, synset.stages, index, runner.device(device))
    # Before the first matching step: a resume on any machine keeps this precision (``settle_precision``).
    record_precision(RunDir.of(config).precision, config.precision, device)
    outcome = runner.run(config, synset.stages[:index], index, job, prepare_stage, hooks or StageHooks(), progress)
    info = {"factor": job.factor, "best_iteration": outcome.best_iteration,
            "val_accuracy": outcome.best_val_accuracy, "skipped_nonfinite": outcome.skipped_nonfinite,
            "lr_clamped": outcome.lr_clamped, "history": outcome.history, "resumed_at": outcome.resumed_at}
    skipped = getattr(job.matcher, "skipped_experts", [])  # mtt.skip_damaged_experts: said in the report
    if skipped:
        info["skipped_experts"] = skipped
    return synset_io.Stage(outcome.images.cpu(), job.state.labels.cpu(), outcome.lr, info)


def _stored_union(stages: list, data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Earlier stages as stored (matchers decode multi-formation themselves), concatenated."""
    if not stages:
        return torch.empty(0, *data.image_shape), torch.empty(0, dtype=torch.long)
    return torch.cat([s.images for s in stages]), torch.cat([s.labels for s in stages])


def _initial_lr(config: DistillConfig, device) -> torch.Tensor | None:
    lr = config.base.initial_lr(config)
    return None if lr is None else torch.tensor(lr, device=device).requires_grad_(True)


def _settings(config: DistillConfig, index: int) -> StageSettings:
    s, base = config.stages, config.base
    return StageSettings(iterations=s.iterations, lr_img=base.lr_img(config), lr_lr=base.lr_lr(config),
                         eval_every=s.eval_every, checkpoint_every=s.checkpoint_every, lr_min=s.lr_min,
                         seed=config.seed * 1000 + 500 + index)


def build_validator(config: DistillConfig, data: DataBundle, earlier: list, labels: torch.Tensor, device):
    """The stage's validation check (``pdd_ray.distill.validation``), under the run's evaluation protocol."""
    st = config.stages
    validator = ProgressiveValidator(earlier, labels, config.base.factor(config),
                                     model_factory(config.model, data.image_shape, data.num_classes, device),
                                     (data.val.images, data.val.labels),
                                     protocol=EvalProtocol.from_config(config.eval, config.augment,
                                                                       config.model.arch, config.precision),
                                     nets=st.val_nets, epochs=st.eval_epochs, start=st.validation_start,
                                     cache=validation_cache(config))
    if config.eval.executor != "ray" or config.parallel.workers > 1:
        return validator  # data-parallel stages validate on rank 0, in its process
    from pdd_ray.parallel.evaluation import ModelSpec
    from pdd_ray.parallel.validation import RayValidator
    return RayValidator(validator, ModelSpec(config.model, data.image_shape, data.num_classes),
                        config.eval.cpus_per_run, config.eval.gpus_per_run)


def validation_cache(config: DistillConfig) -> StartCache:
    """Where each stage's validation nets are kept for the next stage to continue (``RunDir.stages``)."""
    # The config fingerprint leaves the evaluation out (it does not change the images); a start depends on it.
    context = config_fingerprint(config) + json.dumps(to_dict(config.eval), sort_keys=True, default=str)
    return StartCache(RunDir.of(config).stages, context)
