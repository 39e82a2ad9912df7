import json

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.errors import UserError


def make_synset(zca: bool = False) -> synset_io.SyntheticSet:
    """Two stages of 1x4x4 images over 3 classes."""
    gen = torch.Generator().manual_seed(0)
    pre = Preprocessor.fit(torch.rand(50, 1, 4, 4, generator=gen), [0.5], [0.25], zca=zca)
    stages = [synset_io.Stage(torch.randn(6, 1, 4, 4, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2]), lr)
              for lr in (0.02, 0.03)]
    return synset_io.SyntheticSet("fashion_mnist", 3, ("a", "b", "c"), pre, stages, method="test",
                                  config={"data": {"dataset": "fashion_mnist"}}, seed=7)


@pytest.mark.parametrize("zca", [False, True])
def test_round_trip_is_bit_exact(tmp_path, zca):
    original = make_synset(zca)
    loaded = synset_io.load(synset_io.save(original, tmp_path / "set"))
    assert loaded.dataset == "fashion_mnist" and loaded.class_names == ("a", "b", "c") and loaded.seed == 7
    for a, b in zip(original.stages, loaded.stages):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.lr == b.lr
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(loaded.preprocessor(x), original.preprocessor(x))
    assert loaded.image_shape == (1, 4, 4)
    images, labels = loaded.union()
    assert images.shape[0] == 12 and labels.tolist()[:2] == [0, 0]


def test_manifest_records_provenance_and_no_pickles(tmp_path):
    directory = synset_io.save(make_synset(), tmp_path / "set")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["stages"][1] == {"file": "stage_2.safetensors", "count": 6, "ipc": 2, "lr": 0.03}
    assert manifest["versions"]["torch"] and manifest["seed"] == 7 and manifest["config"]["data"]
    assert manifest["preprocessing"]["mean"] == [0.5]
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json", "preprocess.safetensors", "stage_1.safetensors", "stage_2.safetensors"]


def test_missing_or_broken_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        synset_io.load(tmp_path)
    directory = synset_io.save(make_synset(), tmp_path / "set")
    (directory / "stage_2.safetensors").unlink()
    with pytest.raises(UserError, match="stage_2.safetensors is missing"):
        synset_io.load(directory)
    (directory / "stage_1.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        synset_io.load(directory)
    (directory / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="not a pdd-ray"):
        synset_io.load(directory)
