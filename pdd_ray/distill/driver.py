"""The PDD stage driver: experts -> stage 1 .. P (each conditioned on the earlier ones) -> synthetic set.

    OUT/experts/stage_<i>/     expert buffers (MTT): random init for stage 1, transition init after
    OUT/stages/stage_<i>.ckpt  the running stage's checkpoint
    OUT/synthetic/             the synthetic-set directory, one stage appended as each finishes

Finished stages are read back, never recomputed or overwritten; the running
stage resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import to_dict
from pdd_ray.data.bundle import DataBundle
from pdd_ray.distill.base import SyntheticState
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.init import forgetting_partition, init_from_real
from pdd_ray.distill.stage import StageSettings, distill_stage
from pdd_ray.errors import UserError
from pdd_ray.evaluation import evaluate_synthetic
from pdd_ray.jobs.common import make_augment, model_factory
from pdd_ray.storage import is_uri, resolve_input_dir
from pdd_ray.visualize import save_image_grid


def synthetic_dir(config: DistillConfig) -> Path:
    """Where the synthetic set of a run lives."""
    return Path(config.out) / "synthetic"


def load_or_start(config: DistillConfig, data: DataBundle) -> synset_io.SyntheticSet:
    """The finished stages so far (empty set on a fresh run)."""
    directory = synthetic_dir(config)
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
FINGERPRINT_EXCLUDES = ("out", "device", "address", "evaluate", "eval", "parallel")


def config_fingerprint(config: DistillConfig, extra: bytes = b"") -> str:
    """sha256 of the settings that determine the distilled images (plus ``extra`` bytes)."""
    relevant = {k: v for k, v in to_dict(config).items() if k not in FINGERPRINT_EXCLUDES}
    relevant["data"] = {k: v for k, v in relevant["data"].items() if k not in ("root", "download")}
    relevant["experts"] = {k: v for k, v in relevant["experts"].items()
                           if k not in ("out", "device", "address", "data", "model", "augment")}
    relevant["gm"] = to_dict(config.gm_config()) if config.method != "mtt" else None
    # The buffer as an absolute path: workers see absolute paths, and a relative one means the same place.
    relevant["buffer"] = config.buffer if config.buffer is None or is_uri(config.buffer) \
        else str(Path(config.buffer).resolve())
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode() + extra).hexdigest()


def run_stages(config: DistillConfig, data: DataBundle, device: torch.device, progress: bool = True,
               on_iteration: Callable[[int, int], None] | None = None,
               on_validation: Callable[[int, int, float], None] | None = None) -> synset_io.SyntheticSet:
    """Distil every unfinished stage in order and return the full synthetic set.

    Hooks get the 0-based stage index first: ``on_iteration(stage, it)``,
    ``on_validation(stage, it, val_accuracy)``.
    """
    if len(data.val) < data.num_classes:
        raise UserError(f"the validation split has {len(data.val)} images for {data.num_classes} classes; "
                        "raise data.val_size")
    synset = load_or_start(config, data)
    if config.parallel.workers > 1:
        from pdd_ray.parallel.trainer import check_before_compute
        check_before_compute(config)  # not after minutes of expert training
    for index in range(len(synset.stages), config.stages.num_stages):
        if config.method == "mtt":
            ensure_experts(config, index, progress)
        hook = (lambda it, i=index: on_iteration(i, it)) if on_iteration else None
        val_hook = (lambda it, acc, i=index: on_validation(i, it, acc)) if on_validation else None
        stage = distill_one(config, data, synset, index, device, progress, hook, val_hook)
        synset.stages.append(stage)
        synset_io.save(synset, synthetic_dir(config))  # stage files first, manifest last
        pixels, labels = stage.training_data()
        save_image_grid(data.preprocessor.inverse(pixels), labels, synthetic_dir(config) / f"stage_{index + 1}.png", data.class_names,
                        title=f"stage {index + 1}: {config.method}, ipc {config.stages.ipc}")
    return synset


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
    earlier = finished[:index] if config.stages.conditioning else []
    factor = 1 if config.method == "mtt" else config.gm_config().factor
    generator = torch.Generator().manual_seed(config.seed * 1000 + index)
    allowed = _allowed(config, data, index)
    images, labels = init_from_real(data.train, config.stages.ipc, factor, generator, allowed)
    frozen = _stored_union(earlier, data)
    state = SyntheticState(frozen[0].to(device), frozen[1].to(device), images.to(device).requires_grad_(True),
                           labels.to(device), _initial_lr(config, device))
    matcher = build_matcher(config, data, finished[:index], index, device, allowed, comm)
    return StageJob(state, matcher, _settings(config, index), _validator(config, data, earlier, labels, factor, device),
                    stage_fingerprint(config, index, frozen[0]), factor,
                    Path(config.out) / "stages" / f"stage_{index + 1}.ckpt")


def stage_fingerprint(config: DistillConfig, index: int, frozen_images: torch.Tensor) -> str:
    """What a stage checkpoint must match to be resumed: the config and the earlier stages' images."""
    return config_fingerprint(config, f"stage {index}".encode() + frozen_images.cpu().numpy().tobytes())


def distill_one(config: DistillConfig, data: DataBundle, synset: synset_io.SyntheticSet, index: int,
                device: torch.device, progress: bool, on_iteration, on_validation=None) -> synset_io.Stage:
    """Distil stage ``index`` (0-based) conditioned on ``synset.stages[:index]``: in process, or on Ray Train.

    With ``parallel.workers > 1`` the loop runs in the workers' processes, so the hooks are
    not called (sweeps, their only users, run trials with one worker).
    """
    desc = f"stage {index + 1}/{config.stages.num_stages}"
    if config.parallel.workers > 1:
        from pdd_ray.parallel.trainer import distill_stage_on_workers
        # Built here too, on the CPU: it checks data and buffer before any worker starts, and gives the
        # fingerprint and labels the workers will use.
        job = prepare_stage(config, data, synset.stages, index, torch.device("cpu"))
        outcome = distill_stage_on_workers(config, synset.stages[:index], index, job)
    else:
        job = prepare_stage(config, data, synset.stages, index, device)
        outcome = distill_stage(job.state, job.matcher, job.settings, job.validate, job.checkpoint_path,
                                on_iteration, progress, desc=desc, fingerprint=job.fingerprint,
                                on_validation=on_validation)
    info = {"factor": job.factor, "best_iteration": outcome.best_iteration,
            "val_accuracy": outcome.best_val_accuracy, "skipped_nonfinite": outcome.skipped_nonfinite,
            "lr_clamped": outcome.lr_clamped, "history": outcome.history, "resumed_at": outcome.resumed_at}
    return synset_io.Stage(outcome.images.cpu(), job.state.labels.cpu(), outcome.lr, info)


def _stored_union(stages: list, data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Earlier stages as stored (matchers decode multi-formation themselves), concatenated."""
    if not stages:
        return torch.empty(0, *data.image_shape), torch.empty(0, dtype=torch.long)
    return torch.cat([s.images for s in stages]), torch.cat([s.labels for s in stages])


def _initial_lr(config: DistillConfig, device) -> torch.Tensor | None:
    if config.method != "mtt":
        return None
    return torch.tensor(config.mtt.lr_teacher, device=device).requires_grad_(True)


def _settings(config: DistillConfig, index: int) -> StageSettings:
    s = config.stages
    mtt = config.method == "mtt"
    return StageSettings(iterations=s.iterations, lr_img=config.mtt.lr_img if mtt else config.gm_config().lr_img,
                         lr_lr=config.mtt.lr_lr if mtt else None, eval_every=s.eval_every,
                         checkpoint_every=s.checkpoint_every, lr_min=s.lr_min, seed=config.seed * 1000 + 500 + index)


def _allowed(config: DistillConfig, data: DataBundle, index: int) -> torch.Tensor | None:
    """Positions in ``data.train`` a stage may initialise from (forgetting curriculum), or None."""
    if not config.stages.forgetting_curriculum or index == 0:
        return None
    from pdd_ray.selection.forgetting import load_scores
    path = expert_dir(config, 0) / "forgetting.safetensors"
    if not path.is_file():
        raise UserError(f"forgetting_curriculum needs {path}: build the stage-1 experts with track_forgetting=true")
    scores, disk_indices = load_scores(path)
    by_disk = dict(zip(disk_indices.tolist(), scores.tolist()))
    missing = [i for i in data.train_indices.tolist() if i not in by_disk]
    if missing:
        raise UserError(f"{path} has no forgetting score for {len(missing)} training examples (e.g. #{missing[0]}): "
                        "it was built on a different split; rebuild the buffer with this data config")
    train_scores = torch.tensor([by_disk[i] for i in data.train_indices.tolist()])
    return forgetting_partition(train_scores, index, config.stages.forgetting_bin_width, data.train.labels,
                                keep_at_least=config.stages.ipc * config.gm_config().factor ** 2
                                if config.method != "mtt" else config.stages.ipc)


def _validator(config: DistillConfig, data: DataBundle, earlier: list, labels: torch.Tensor, factor: int, device):
    """Validation accuracy of a candidate S_i: a fresh net trained on U_{i-1} ∪ S_i, scored on the val split."""
    make_model = model_factory(config.model, data.image_shape, data.num_classes, device)
    augment = make_augment(config.augment)
    labels = labels.cpu()

    def validate(images: torch.Tensor, lr: float | None) -> float:
        candidate = synset_io.Stage(images.cpu(), labels, lr, {"factor": factor})
        result = evaluate_synthetic(earlier + [candidate], (data.val.images, data.val.labels), make_model,
                                    mode="union", runs=1, epochs=config.stages.eval_epochs, lr=config.eval.lr,
                                    batch_size=config.eval.batch_size, augment=augment, seed=config.seed,
                                    progress=False)
        return result.final[0]

    return validate


def build_matcher(config: DistillConfig, data: DataBundle, earlier: list, index: int, device,
                  allowed: torch.Tensor | None = None, comm=None):
    """The base method's matcher for stage ``index`` (``earlier``: the finished stages; ``comm``: workers)."""
    make_model = model_factory(config.model, data.image_shape, data.num_classes, device)
    augment = None if config.method == "dc" else make_augment(config.augment)  # DC is DSA without augmentation
    if config.method == "mtt":
        from pdd_ray.distill.mtt import MTTMatcher
        from pdd_ray.models import FlatForward
        from pdd_ray.trajectories import TrajectoryStore
        model = make_model()
        store = TrajectoryStore.open(expert_dir(config, index), layout=None)
        return MTTMatcher(config.mtt, store, FlatForward(model), augment, device, comm,
                          shard_batch=config.parallel.split == "batch")
    from pdd_ray.distill.gradient_matching import GradientMatcher
    real = data.train if allowed is None else data.train.subset(allowed)  # the stage's forgetting partition
    transition = earlier and config.stages.transitions  # IDC's transition: the net first learns the earlier sets
    return GradientMatcher(config.gm_config(), real, make_model, augment, device,
                           warmup=_warmup(config, earlier, augment) if transition else None,
                           seed=config.seed * 1000 + index, comm=comm)


def _warmup(config: DistillConfig, earlier: list, augment):
    """IDC base: the matching network first trains on the union of the earlier sets."""
    from pdd_ray.evaluation.protocol import phases_for, train_on_phases

    def warmup(net):
        train_on_phases(net, phases_for(earlier, "union", config.stages.eval_epochs, config.eval.lr),
                        batch_size=config.eval.batch_size, augment=augment)
    return warmup


def ensure_experts(config: DistillConfig, index: int, progress: bool) -> None:
    """Build (or finish) the expert buffer stage ``index`` needs; a given stage-1 buffer is used as is."""
    given_buffer = index == 0 and config.buffer is not None
    reuses_stage_1 = index > 0 and not config.stages.transitions
    if given_buffer or reuses_stage_1:
        return
    from pdd_ray.experts.buffer import build_buffer
    build_buffer(experts_config(config, index), progress=progress)


def expert_dir(config: DistillConfig, index: int) -> Path:
    """The expert buffer stage ``index`` matches against."""
    if index == 0 or not config.stages.transitions:
        # A URI buffer (s3://, gs://, ...) is mirrored into the local cache once; later calls fetch nothing new.
        return resolve_input_dir(config.buffer) if config.buffer else Path(config.out) / "experts" / "stage_1"
    return Path(config.out) / "experts" / f"stage_{index + 1}"


def experts_config(config: DistillConfig, index: int):
    """The ExpertsConfig that builds stage ``index``'s buffer (transition init from the synthetic dir)."""
    transition = str(synthetic_dir(config)) if index > 0 and config.stages.transitions else None
    return dataclasses.replace(config.experts, out=str(expert_dir(config, index)), seed=config.seed + 7919 * index,
                               device=config.device, address=config.address, transition=transition,
                               data=config.data, model=config.model, augment=config.augment)
