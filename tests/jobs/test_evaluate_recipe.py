"""``pdd-ray evaluate DIR`` reproduces the run's reported number: the recipe comes from the set's manifest."""

import json

import torch

from pdd_ray import synset as synset_io
from pdd_ray.cli import main
from pdd_ray.config import to_dict
from pdd_ray.jobs.evaluate import evaluate_config
from pdd_ray.jobs.run import evaluate_and_report
from tests.jobs.test_run import _setup

# a recipe far from EvaluateConfig's defaults: if evaluate ignored the manifest, the numbers would differ
RECIPE = ["eval.batch_size=8", "eval.schedule=multistep", "eval.cutmix=0.5", "eval.lr=0.02", "model.width=6"]


def _run(tmp_path, root):
    config, data, synset = _setup(root, tmp_path / "run", *RECIPE)
    synset.config = to_dict(config)
    metrics = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    return metrics, synset_io.save(synset, tmp_path / "run" / "synthetic")


def test_evaluate_reproduces_the_runs_number_with_its_recorded_recipe(tmp_path, tiny_fashion_root, capsys):
    metrics, directory = _run(tmp_path, tiny_fashion_root)
    assert main(["evaluate", str(directory), "--device", "cpu"]) == 0
    (entry,) = json.loads((directory / "eval.json").read_text()).values()
    assert entry["result"]["per_run"] == metrics["pdd"]["per_run"]
    assert entry["recipe"] == {"recorded": True, "changed": []}
    assert "batch 8" in entry["protocol"] and entry["config"]["model"]["width"] == 6


def test_flags_and_overrides_change_the_recorded_recipe_and_say_so(tmp_path, tiny_fashion_root):
    _, directory = _run(tmp_path, tiny_fashion_root)
    config = evaluate_config(directory, None, ["eval.epochs=1", "model.width=3"])
    assert (config.eval.epochs, config.model.width, config.eval.batch_size) == (1, 3, 8)
    assert main(["evaluate", str(directory), "--device", "cpu", "--epochs", "1"]) == 0
    (entry,) = json.loads((directory / "eval.json").read_text()).values()
    assert entry["recipe"] == {"recorded": True, "changed": ["eval.epochs"]}


def test_a_set_without_a_run_config_is_evaluated_with_the_defaults_and_says_so(tmp_path, tiny_fashion_root):
    _, directory = _run(tmp_path, tiny_fashion_root)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["config"] = {"data": manifest["config"]["data"]}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    config = evaluate_config(directory, None, ["eval.runs=1", "eval.epochs=1", "model.width=2"])
    assert config.eval.batch_size == 256 and config.eval.schedule == "official"
    assert main(["evaluate", str(directory), "--device", "cpu", "--runs", "1", "--epochs", "1"]) == 0
    (entry,) = json.loads((directory / "eval.json").read_text()).values()
    assert entry["recipe"]["recorded"] is False
