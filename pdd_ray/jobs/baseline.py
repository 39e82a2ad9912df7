"""``pdd-ray baseline``: a coreset of real images saved in the synthetic-set format, then evaluated."""

from __future__ import annotations

from pathlib import Path

import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import BaselineConfig, to_dict
from pdd_ray.data.bundle import create_dataset
from pdd_ray.locking import hold_directory
from pdd_ray.jobs.evaluate import EvaluateConfig, describe, record_result, run_protocol
from pdd_ray.selection import save_scores
from pdd_ray.selection.coreset import coreset_stage
from pdd_ray.train.loop import resolve_device, seed_everything
from pdd_ray.visualize import save_image_grid


def run_baseline(config: BaselineConfig, progress: bool = True) -> dict:
    """Select ``ipc`` real images per class, write the set (+ grid, + forgetting scores), evaluate it."""
    with hold_directory(config.out, "baseline"):
        return _run_locked(config, progress)


def _run_locked(config: BaselineConfig, progress: bool) -> dict:
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = create_dataset(config.data)
    out = Path(config.out)
    sel = config.selection
    stage, context = coreset_stage(data.train, sel, config.model, config.augment, config.seed, device)
    synset = synset_io.SyntheticSet(data.name, data.num_classes, data.class_names, data.preprocessor, [stage],
                                    method=f"coreset:{sel.method}", config=to_dict(config), seed=config.seed)
    synset_io.save(synset, out)
    save_image_grid(data.preprocessor.inverse(stage.images), stage.labels, out / "stage_1.png",
                    data.class_names, title=f"{data.name} {sel.method} ipc={sel.ipc}")
    if context._trained is not None:
        _, scores = context.scorer(data.train)
        save_scores(out / "forgetting.safetensors", scores, data.train_indices)
    summary = {"out": str(out), "method": sel.method, "ipc": sel.ipc, "count": len(stage.labels)}
    if config.evaluate:
        summary["eval"] = _evaluate(synset, data, config, device, progress)
    return summary


def _evaluate(synset, data, config: BaselineConfig, device: torch.device, progress: bool) -> dict:
    eval_config = EvaluateConfig(device=config.device, model=config.model, augment=config.augment, eval=config.eval)
    test = (data.test.images, data.test.labels)
    result = run_protocol(synset, test, eval_config, device, progress)
    entry = describe(result, eval_config, synset)
    record_result(Path(config.out) / "eval.json", f"{config.model.arch}/{config.eval.mode}", entry)
    return entry
