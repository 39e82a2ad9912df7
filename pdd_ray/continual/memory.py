"""Build one phase's memory with one builder, from that phase's classes only; finished memories are kept.

A distillation builder is a PDD run (``distill.driver.run_stages``) on the phase's
``DataBundle`` in ``OUT/memories/<builder>/phase_<t>/``: experts (MTT) train on the
phase's classes only, stages resume from their checkpoints, and a rerun of a
finished phase computes nothing. A coreset builder selects real images of the
phase's classes with the registered selector. Either way the memory is a
synthetic set in phase labels (``pdd_ray.continual.split``).

``memory.json`` says what a phase directory holds (builder, classes, settings);
it is written before the first compute, so a rerun with a different class order
or settings fails with one line instead of mixing two memories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import to_dict
from pdd_ray.continual.config import BuilderConfig, ContinualConfig
from pdd_ray.continual.layout import ContinualDir
from pdd_ray.continual.split import PhaseSplit, phase_bundle
from pdd_ray.data.bundle import DataBundle
from pdd_ray.errors import UserError
from pdd_ray.provenance import write_json
from pdd_ray.selection.coreset import coreset_stage
from pdd_ray.train.loop import seed_everything


def identity(config: ContinualConfig, builder: BuilderConfig, split: PhaseSplit, phase: int) -> dict:
    """Everything that decides a phase's memory: the builder, its settings, the phase's classes."""
    settings = config.run_config(builder) if not builder.is_coreset else config.selection_config()
    if not builder.is_coreset:
        from pdd_ray.distill.driver import config_fingerprint
        settings = {"distill_fingerprint": config_fingerprint(settings)}
    else:
        settings = {"selection": to_dict(settings), "model": to_dict(config.model),
                    "augment": to_dict(config.augment), "seed": config.seed,
                    "data": {k: v for k, v in to_dict(config.data).items() if k not in ("root", "download")}}
    return {"builder": builder.label, "method": builder.method, "stages": builder.stages,
            "memory_ipc": config.memory.ipc, "phase": phase + 1, "classes": list(split.classes(phase)),
            **settings}


def digest(record: dict) -> str:
    """sha256 of a JSON record (for the evaluation caches that depend on memories)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def is_finished(config: ContinualConfig, builder: BuilderConfig, split: PhaseSplit, phase: int) -> bool:
    """True when phase ``phase``'s memory of ``builder`` is complete (and is the one this config asks for)."""
    marker = _read_marker(ContinualDir.of(config).marker(builder.label, phase))
    if marker is None:
        return False
    _check_identity(marker, identity(config, builder, split, phase), builder, phase)
    return bool(marker.get("finished"))


def build_memory(config: ContinualConfig, builder: BuilderConfig, split: PhaseSplit, phase: int,
                 data: DataBundle, device: torch.device, progress: bool = False) -> synset_io.SyntheticSet:
    """Phase ``phase``'s memory (0-based): loaded when finished, else built from the phase's classes only."""
    paths = ContinualDir.of(config)
    if is_finished(config, builder, split, phase):
        return synset_io.load(paths.memory(builder.label, phase))
    record = identity(config, builder, split, phase)
    write_json(paths.marker(builder.label, phase), {**record, "finished": False})
    bundle = phase_bundle(data, split.classes(phase))
    seed_everything(config.seed)  # the same start in this process or in a Ray task
    out = paths.phase(builder.label, phase)
    if builder.is_coreset:
        synset = select_memory(config, builder, bundle, out, device)
    else:
        synset = distill_memory(config, builder, bundle, out, device, progress)
    write_json(paths.marker(builder.label, phase), {**record, "finished": True, "images": _count(synset)})
    return synset


def check_fits(config: ContinualConfig, split: PhaseSplit, data: DataBundle) -> None:
    """Refuse, before any compute, a distillation builder whose stages need more images than a phase's class has."""
    from pdd_ray.distill.driver import check_data_fits
    for builder in (b for b in config.builders if not b.is_coreset):
        run = config.run_config(builder)
        for t in range(len(split.phases)):
            check_data_fits(run, phase_bundle(data, split.classes(t)))


def load_memory(config: ContinualConfig, builder: BuilderConfig, phase: int) -> synset_io.SyntheticSet:
    """A finished memory, read back."""
    return synset_io.load(ContinualDir.of(config).memory(builder.label, phase))


def distill_memory(config: ContinualConfig, builder: BuilderConfig, bundle: DataBundle, out: Path,
                   device: torch.device, progress: bool) -> synset_io.SyntheticSet:
    """PDD with the builder's base method on the phase bundle (resumes a half-finished phase)."""
    from pdd_ray.distill.driver import run_stages
    return run_stages(config.run_config(builder, out=str(out)), bundle, device, progress)


def select_memory(config: ContinualConfig, builder: BuilderConfig, bundle: DataBundle, out: Path,
                  device: torch.device) -> synset_io.SyntheticSet:
    """``memory.ipc`` real images per class of the phase, chosen by the builder's selector."""
    stage, _ = coreset_stage(bundle.train, dataclasses.replace(config.selection_config(), method=builder.method),
                             config.model, config.augment, config.seed, device)
    synset = synset_io.SyntheticSet(bundle.name, bundle.num_classes, bundle.class_names, bundle.preprocessor,
                                    [stage], method=f"coreset:{builder.method}", config=to_dict(config),
                                    seed=config.seed)
    synset_io.save(synset, out / "synthetic")
    return synset


def _count(synset: synset_io.SyntheticSet) -> int:
    return sum(len(s.labels) for s in synset.stages)


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise UserError(f"{path} is not valid JSON; delete that phase directory to rebuild it") from None


def _check_identity(marker: dict, wanted: dict, builder: BuilderConfig, phase: int) -> None:
    recorded = {k: v for k, v in marker.items() if k not in ("finished", "images")}
    if recorded != wanted:
        changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        raise UserError(f"memories/{builder.label}/phase_{phase + 1} was built with other settings "
                        f"({', '.join(changed)} changed); use another out= or delete it to start over")


__all__ = ["build_memory", "check_fits", "digest", "identity", "is_finished", "load_memory"]
