"""Tiny synthetic sets on disk for the export tests."""

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.data.preprocess import Preprocessor


def write_set(path, factor=1, zca=False, channels=1, lrs=(0.02, 0.03)):
    """Two stages of 4x4 images over 3 classes (one named with a slash, as Fashion-MNIST's 'T-shirt/top')."""
    gen = torch.Generator().manual_seed(0)
    pre = Preprocessor.fit(torch.rand(50, channels, 4, 4, generator=gen), [0.5] * channels, [0.25] * channels,
                           zca=zca)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    stages = [synset_io.Stage(torch.randn(6, channels, 4, 4, generator=gen), labels, lr, {"factor": factor})
              for lr in lrs]
    synset = synset_io.SyntheticSet("fashion_mnist", 3, ("T-shirt/top", "b", "c"), pre, stages, "mtt",
                                    {"data": {"dataset": "fashion_mnist"}}, 7)
    return synset_io.save(synset, path)


@pytest.fixture
def stored_set(tmp_path):
    return write_set(tmp_path / "set")
