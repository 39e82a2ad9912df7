"""The Python API: ``pdd_ray.load`` / ``pdd_ray.evaluate`` on sets written by the synthetic-set format."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import pdd_ray
from pdd_ray import synset as synset_io
from pdd_ray.config import AugmentConfig, EvalConfig, ModelConfig
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.errors import UserError
from pdd_ray.jobs.evaluate import EvaluateConfig, load_test_split, run_protocol
from pdd_ray.train.loop import resolve_device

RECIPE = {"model": {"arch": "convnet", "width": 8, "depth": 2}, "augment": {"dsa": False},
          "eval": {"runs": 2, "epochs": 2, "batch_size": 16, "schedule": "multistep", "cutmix": 0.5}}


def write_set(path, config=None, factor=1, size=8, classes=3, zca=False):
    gen = torch.Generator().manual_seed(0)
    pre = Preprocessor.fit(torch.rand(50, 1, size, size, generator=gen), [0.3], [0.2], zca=zca)
    labels = torch.arange(classes).repeat_interleave(2)
    stages = [synset_io.Stage(torch.randn(len(labels), 1, size, size, generator=gen), labels, lr, {"factor": factor})
              for lr in (0.02, 0.03)]
    names = tuple(f"class{c}" for c in range(classes))
    synset = synset_io.SyntheticSet("fashion_mnist", classes, names, pre, stages, "mtt", config or {}, 3)
    return synset_io.save(synset, path)


def test_load_gives_network_and_pixel_images_per_stage_and_union(tmp_path):
    directory = write_set(tmp_path / "set")
    ds = pdd_ray.load(directory)
    stored = synset_io.load(directory)
    assert ds.lrs == [0.02, 0.03] and ds.num_classes == 3 and ds.class_names[2] == "class2"
    assert torch.equal(ds.images(2), stored.stages[1].images) and ds.labels(1).tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.images().shape == (12, 1, 8, 8) and len(ds) == 12
    assert torch.allclose(ds.images(space="pixels"), stored.preprocessor.inverse(ds.images()))
    assert "2 stage(s), IPC 2+2" in repr(ds)
    with pytest.raises(UserError, match="stage must be 1..2"):
        ds.images(3)
    with pytest.raises(UserError, match="space must be"):
        ds.images(space="rgb")


def test_multi_formation_sets_are_seen_decoded(tmp_path):
    ds = pdd_ray.load(write_set(tmp_path / "set", factor=2))
    assert ds.images(1).shape == (24, 1, 8, 8) and len(ds.as_dataset()) == 48
    assert ds.labels(1).tolist()[:4] == [0, 0, 0, 0]


def test_as_dataset_feeds_a_dataloader(tmp_path):
    ds = pdd_ray.load(write_set(tmp_path / "set"))
    batches = list(DataLoader(ds.as_dataset(space="pixels"), batch_size=5))
    assert [len(b[1]) for b in batches] == [5, 5, 2]
    assert torch.allclose(torch.cat([b[0] for b in batches]), ds.images(space="pixels"))


@pytest.mark.parametrize("zca", [False, True])
def test_transform_maps_pil_arrays_and_tensors_like_the_preprocessor(tmp_path, zca):
    ds = pdd_ray.load(write_set(tmp_path / "set", zca=zca))
    array = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    expected = ds.synset.preprocessor(torch.from_numpy(array).float().div(255).view(1, 1, 8, 8))[0]
    for image in (Image.fromarray(array), array, torch.from_numpy(array).unsqueeze(0),
                  torch.from_numpy(array).float().div(255).unsqueeze(0)):
        assert torch.allclose(ds.transform(image), expected, atol=1e-6)


def test_recipe_is_read_back_validated_and_overridable(tmp_path):
    recipe = pdd_ray.load(write_set(tmp_path / "set", {**RECIPE, "stages": {"ipc": 2}})).recipe
    assert recipe.recorded and recipe.model.width == 8 and recipe.eval.cutmix == 0.5
    protocol = recipe.protocol()
    assert (protocol.batch_size, protocol.schedule, protocol.augment) == (16, "multistep", None)
    assert recipe.with_overrides({"eval.runs": 1, "model.width": 4}).model.width == 4
    with pytest.raises(UserError, match="unknown evaluation override"):
        recipe.with_overrides({"stages.ipc": 1})
    with pytest.raises(UserError, match="eval.runs must be"):
        recipe.with_overrides({"eval.runs": 0})


def test_recipe_without_a_run_config_is_the_default_and_says_so(tmp_path):
    recipe = pdd_ray.load(write_set(tmp_path / "set")).recipe
    assert not recipe.recorded and recipe.model == ModelConfig() and recipe.eval == EvalConfig()


def test_untrusted_recipe_values_are_refused(tmp_path):
    with pytest.raises(UserError, match="model.width must be"):
        _ = pdd_ray.load(write_set(tmp_path / "a", {"model": {"width": -3}})).recipe
    with pytest.raises(UserError, match="malformed 'eval' section"):
        _ = pdd_ray.load(write_set(tmp_path / "b", {"eval": [1, 2]})).recipe


def test_evaluate_uses_the_recorded_recipe_as_the_cli_would(tmp_path, tiny_fashion_root):
    config = {**RECIPE, "data": {"dataset": "fashion_mnist", "root": str(tiny_fashion_root)}}
    directory = write_set(tmp_path / "set", config, size=28, classes=10)
    measured = pdd_ray.evaluate(directory, device="cpu")
    assert measured.result.mode == "progressive" and len(measured.result.per_run) == 2
    assert "batch 16" in measured.protocol and "CutMix" in measured.protocol
    cli = EvaluateConfig(device="cpu", model=ModelConfig(**RECIPE["model"]), augment=AugmentConfig(dsa=False),
                         eval=EvalConfig(**RECIPE["eval"]))
    synset = synset_io.load(directory)
    reference = run_protocol(synset, load_test_split(synset, None), cli, resolve_device("cpu"), progress=False)
    assert measured.result.per_run == reference.per_run
    one = pdd_ray.evaluate(pdd_ray.load(directory), overrides={"eval.runs": 1}, device="cpu")
    assert len(one.result.per_run) == 1 and one.mean == one.result.mean


def test_unknown_attribute_of_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pdd_ray.nope


@pytest.fixture
def doctest_globals(tmp_path, tiny_fashion_root):
    """What the examples in ``pdd_ray.api``'s docstrings assume: a saved 2-stage Fashion-MNIST set and its data."""
    directory = write_set(tmp_path / "set", size=28, classes=10)
    return {"pdd_ray": pdd_ray, "torch": torch, "directory": directory, "fashion_root": str(tiny_fashion_root)}


def test_docstring_examples_of_the_api_run_as_written(doctest_globals):
    """The ``>>>`` examples (load, as_dataset, transform, evaluate) give the outputs they show."""
    import doctest
    import io

    from pdd_ray import api
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in doctest.DocTestFinder().find(api, globs=doctest_globals) if t.examples]
    for test in tests:
        runner.run(test, out=report.write)
    names = {t.name.rsplit(".", 1)[-1] for t in tests}
    assert {"load", "as_dataset", "transform", "evaluate"} <= names
    assert runner.failures == 0, report.getvalue()
