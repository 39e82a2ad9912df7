"""``pdd-ray evaluate DIR``: the evaluation protocol on a saved synthetic set, results merged into DIR/eval.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pdd_ray import synset as synset_io
from pdd_ray.config import (AugmentConfig, DataConfig, EvalConfig, ModelConfig, check_device, from_dict, load_config,
                            to_dict)
from pdd_ray.data.registry import load_raw
from pdd_ray.evaluation import EvalProtocol, EvalResult
from pdd_ray.evaluation.recorded import SECTIONS, recorded_recipe
from pdd_ray.models import model_factory
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.train.loop import resolve_device


@dataclass
class EvaluateConfig:
    """``pdd-ray evaluate``: which protocol and network; data location defaults to the set's own."""

    device: str = "auto"
    data_root: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_device(self.device)


def evaluate_config(directory: str | Path, path: str | Path | None = None, overrides=()) -> EvaluateConfig:
    """The set's recorded recipe (network, augmentation, protocol of its run) under the user's YAML and overrides.

    So ``pdd-ray evaluate DIR`` reproduces the run's reported number unless told otherwise.
    """
    recipe = recorded_recipe(synset_io.read_manifest(directory).get("config"))
    return load_config(EvaluateConfig, path, overrides, base=recipe.to_dict())


def recipe_origin(config: EvaluateConfig, synset) -> dict:
    """Whether the set recorded its run's recipe, and which of its values this evaluation changed."""
    recipe = recorded_recipe(synset.config).to_dict()
    changed = [f"{name}.{key}" for name in SECTIONS for key, value in to_dict(getattr(config, name)).items()
               if recipe[name].get(key) != value]
    return {"recorded": recorded_recipe(synset.config).recorded, "changed": changed}


def evaluate_directory(directory: str | Path, config: EvaluateConfig, progress: bool = True) -> dict:
    """Evaluate the set in ``directory``; return the entry written into ``eval.json``."""
    directory = Path(directory)
    synset = synset_io.load(directory)
    test = load_test_split(synset, config.data_root)
    device = resolve_device(config.device)
    result = run_protocol(synset, test, config, device, progress)
    entry = describe(result, config, synset)
    record_result(directory / "eval.json", f"{config.model.arch}/{config.eval.mode}", entry)
    return entry


def load_test_split(synset, data_root: str | None):
    """The test split of the set's dataset, in the set's own preprocessing (never refitted)."""
    saved = synset.config.get("data", {}) if isinstance(synset.config, dict) else {}
    data = from_dict(DataConfig, {k: v for k, v in saved.items() if k in DataConfig.__dataclass_fields__})
    raw = load_raw(synset.dataset, data_root or data.root, "test", download=data.download)
    return synset.preprocessor(raw.to_float()), raw.labels


def eval_protocol(config: EvaluateConfig) -> EvalProtocol:
    """The evaluation protocol of ``config`` (its eval, augment and model sections)."""
    return EvalProtocol.from_config(config.eval, config.augment, config.model.arch)


def run_protocol(synset, test, config: EvaluateConfig, device, progress: bool = True) -> EvalResult:
    """Train ``config.eval.runs`` networks on ``synset`` and measure test accuracy."""
    make_model = model_factory(config.model, synset.image_shape, synset.num_classes, device)
    return eval_protocol(config).evaluate(synset.stages, test, make_model, progress=progress)


def describe(result: EvalResult, config: EvaluateConfig, synset) -> dict:
    """The eval.json entry: result, protocol in words (and epochs trained per network), config, versions."""
    protocol = eval_protocol(config)
    text = protocol.describe(num_stages=len(synset.stages)) + "; test accuracy on the dataset's test split"
    return {"result": result.to_dict(), "protocol": text,
            "epochs_per_net": protocol.total_epochs(len(synset.stages)), "config": to_dict(config),
            "recipe": recipe_origin(config, synset),
            "synthetic_set": {"dataset": synset.dataset, "method": synset.method, "seed": synset.seed,
                              "stages": [_stage_entry(s) for s in synset.stages]},
            "versions": versions(), "created": now()}


def _stage_entry(stage) -> dict:
    """Stored and trained-on image counts of one stage (multi-formation: factor² decoded per stored image)."""
    factor = int(stage.info.get("factor", 1))
    return {"count": len(stage.labels), "ipc": stage.ipc, "lr": stage.lr, "factor": factor,
            "decoded_count": len(stage.labels) * factor * factor}


def record_result(path: Path, key: str, entry: dict) -> None:
    """Merge ``entry`` under ``key`` into a JSON file, keeping other arch/mode results."""
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing[key] = entry
    write_json(path, existing)
