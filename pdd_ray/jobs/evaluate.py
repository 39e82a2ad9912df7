"""``pdd-ray evaluate DIR``: the evaluation protocol on a saved synthetic set, results merged into DIR/eval.json.

Extra figures, only when asked (``figures``; ``--figures`` on the command line), each
trained under the set's own protocol and scored on the test split:

    random-real  random real images, as many per class as the set stores in all its stages
                 (a multi-formation set: its stored images, as the run's baseline counts them),
                 drawn (seeded by the set's seed) from the training split the set was made
                 from, trained as one union phase as long as the set's networks train (the
                 run's equal-budget baseline); ``set_minus_this`` is the improvement over it
    no-aug       the set with augmentation off (no DSA, no CutMix), the same epochs;
                 ``set_minus_this`` is what augmentation adds
    full-real    the whole training split the set was made from (the run's training split
                 less its validation hold-out), the same equal-budget union phase;
                 ``set_minus_this`` is how far the set stays below real data
    dd-ranking   random-real and no-aug (DD-Ranking's two questions: better than random
                 real images at the same budget? still good without augmentation?)

Nothing here selects on the test split: the random images are drawn from the training
split, and every figure is the final accuracy of its networks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import (AugmentConfig, DataConfig, EvalConfig, ModelConfig, SelectionConfig, check_device,
                            from_dict, load_config, to_dict)
from pdd_ray.data.registry import load_raw
from pdd_ray.data.splits import LabeledImages
from pdd_ray.errors import UserError
from pdd_ray.evaluation import EvalProtocol, EvalResult
from pdd_ray.evaluation.recorded import SECTIONS, recorded_recipe
from pdd_ray.evaluation.runner import Evaluation, InProcessRunner
from pdd_ray.models import model_factory
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.train.loop import resolve_device

FIGURES = ("random-real", "no-aug", "full-real")
FIGURE_GROUPS = {"dd-ranking": ("random-real", "no-aug")}
FIGURE_CHOICES = FIGURES + tuple(FIGURE_GROUPS)


@dataclass
class EvaluateConfig:
    """``pdd-ray evaluate``: which protocol and network; data location defaults to the set's own."""

    device: str = "auto"
    data_root: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    figures: list[str] = field(default_factory=list)  # extra figures (module docstring); none by default

    def validate(self) -> None:
        check_device(self.device)
        expand_figures(self.figures)


def expand_figures(names) -> tuple[str, ...]:
    """The figures ``names`` asks for, groups expanded, in ``FIGURES`` order; a UserError for an unknown one."""
    wanted = set()
    for name in names:
        if name not in FIGURE_CHOICES:
            raise UserError(f"unknown evaluation figure '{name}'; choose from: {', '.join(FIGURE_CHOICES)}")
        wanted.update(FIGURE_GROUPS.get(name, (name,)))
    return tuple(f for f in FIGURES if f in wanted)


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
    if config.figures:
        entry["figures"] = extra_figures(synset, test, config, result, config.figures, device, config.data_root,
                                         progress)
    record_result(directory / "eval.json", f"{config.model.arch}/{config.eval.mode}", entry)
    return entry


def load_test_split(synset, data_root: str | None):
    """The test split of the set's dataset, in the set's own preprocessing (never refitted)."""
    data = saved_data_config(synset, data_root)
    raw = load_raw(synset.dataset, data.root, "test", download=data.download)
    return synset.preprocessor(raw.to_float()), raw.labels


def load_train_split(synset, data_root: str | None) -> LabeledImages:
    """The training split the set was made from (less the run's validation hold-out), in the set's preprocessing.

    The run's data config picks the images (its seeded hold-out, its per-class cap); the
    set's own preprocessing maps them, as it maps the test split.
    """
    from pdd_ray.data.bundle import create_dataset
    data = saved_data_config(synset, data_root)
    chosen = create_dataset(data).train_indices
    raw = load_raw(synset.dataset, data.root, "train", download=data.download)
    return LabeledImages(synset.preprocessor(raw.to_float()[chosen]), raw.labels[chosen], synset.num_classes)


def saved_data_config(synset, data_root: str | None) -> DataConfig:
    """The data section the set's run recorded (defaults where it recorded none), at ``data_root`` if given."""
    saved = synset.config.get("data", {}) if isinstance(synset.config, dict) else {}
    data = from_dict(DataConfig, {k: v for k, v in saved.items() if k in DataConfig.__dataclass_fields__})
    data.dataset = synset.dataset
    data.root = data_root or data.root
    return data


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
            "seed": protocol.seed, "recipe": recipe_origin(config, synset),
            "synthetic_set": {"dataset": synset.dataset, "method": synset.method, "seed": synset.seed,
                              "stages": [_stage_entry(s) for s in synset.stages]},
            "precision": precision(synset), "versions": versions(), "created": now()}


def precision(synset) -> dict:
    """Number formats: what the networks compute in, and how the set's images are stored."""
    stored = {str(s.images.dtype).replace("torch.", "") for s in synset.stages}
    return {"compute": str(torch.get_default_dtype()).replace("torch.", ""), "stored_images": sorted(stored)}


# ------------------------------------------------------------------ extra figures (module docstring)

def extra_figures(synset, test, recipe, headline: EvalResult, figures, device, data_root: str | None,
                  progress: bool = True) -> dict:
    """The asked-for figures beside ``headline`` (the set's own result), each with its protocol in words.

    ``recipe``: anything with ``model``, ``augment`` and ``eval`` sections (an ``EvaluateConfig``,
    a ``RecordedRecipe``). Each figure: its result, protocol, and ``set_minus_this`` (the set's mean
    final accuracy minus the figure's, a fraction).
    """
    wanted = expand_figures(figures)
    protocol = EvalProtocol.from_config(recipe.eval, recipe.augment, recipe.model.arch)
    train = load_train_split(synset, data_root) if {"random-real", "full-real"} & set(wanted) else None
    built = {name: FIGURE_BUILDERS[name](synset, protocol, train, recipe, device) for name in wanted}
    evaluations = {name: Evaluation(how, stages, test) for name, (how, stages, _) in built.items()}
    make_model = model_factory(recipe.model, synset.image_shape, synset.num_classes, device)
    results = InProcessRunner(make_model, device).evaluate(evaluations, progress)
    out = {}
    for name, (_, _, detail) in built.items():
        evaluation, result = evaluations[name], results[name]
        text = (evaluation.protocol.describe(num_stages=len(evaluation.stages)) + "; test accuracy on the "
                "dataset's test split")
        out[name.replace("-", "_")] = {"result": result.to_dict(), "protocol": text,
                                       "epochs_per_net": evaluation.protocol.total_epochs(len(evaluation.stages)),
                                       "set_minus_this": headline.mean - result.mean, **detail}
    return out


def _random_real(synset, protocol: EvalProtocol, train: LabeledImages, recipe, device):
    """Random real images, the set's total IPC per class, chosen as ``pdd-ray baseline`` / the run choose them."""
    from pdd_ray.selection.coreset import coreset_stage
    ipc = sum(s.ipc for s in synset.stages)
    # The set's seed: the same images as the run's own random-real baseline.
    stage, _ = coreset_stage(train, SelectionConfig(method="random", ipc=ipc), recipe.model, recipe.augment,
                             synset.seed, device)
    counts = torch.bincount(train.labels, minlength=synset.num_classes)
    detail = {"images_per_class": ipc, "images": len(stage.labels), "selection_seed": synset.seed,
              "capped_classes": [c for c in range(synset.num_classes) if int(counts[c]) < ipc],
              "drawn_from": "the training split the set was made from (never the validation or test split)"}
    return protocol.equal_budget(len(synset.stages)), [stage], detail


def _no_aug(synset, protocol: EvalProtocol, train, recipe, device):
    """The set itself, augmentation off."""
    return protocol.without_augmentation(), synset.stages, {}


def _full_real(synset, protocol: EvalProtocol, train: LabeledImages, recipe, device):
    """The whole training split as one stage (the protocol's lr, or the default, since it has no learned one)."""
    stage = synset_io.Stage(train.images, train.labels)
    detail = {"images": len(train.labels), "drawn_from": "the whole training split the set was made from"}
    return protocol.equal_budget(len(synset.stages)), [stage], detail


def figures_table(entry: dict) -> list[str]:
    """The set's row and one row per extra figure: test accuracy, and the set minus it in points."""
    def row(name: str, result: dict, epochs, difference: str = "") -> str:
        return (f"{name:<44} {result['runs']:>4} {epochs:>7} {100 * result['mean']:>8.2f} ± "
                f"{100 * result['std']:<6.2f} {difference:>12}")

    lines = [f"{'set / figure':<44} {'runs':>4} {'epochs':>7} {'test accuracy %':>17} {'set - it (pts)':>15}",
             row("this set", entry["result"], entry["epochs_per_net"])]
    for key, figure in entry.get("figures", {}).items():
        lines.append(row(_figure_name(key, figure), figure["result"], figure["epochs_per_net"],
                         f"{100 * figure['set_minus_this']:+.2f}"))
    return lines


def _figure_name(key: str, figure: dict) -> str:
    if key == "random_real":
        return f"random real, {figure['images_per_class']} per class (equal budget)"
    if key == "full_real":
        return f"full real training split ({figure['images']} images)"
    return "this set without augmentation"


# name -> (synset, protocol, training split, recipe, device) -> (protocol, stages, what to record beside the result)
FIGURE_BUILDERS = {"random-real": _random_real, "no-aug": _no_aug, "full-real": _full_real}


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
