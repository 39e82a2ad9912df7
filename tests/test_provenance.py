"""Atomic writes keep the user's umask (mkstemp alone makes every file 0600)."""

import os
import stat

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.provenance import atomic_write, current_umask, write_json


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    assert _mode(write_json(tmp_path / "a.json", {"x": 1})) == expected
    assert _mode(atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"1"))) == expected


def test_a_saved_synthetic_set_is_readable_by_the_group(tmp_path, umask):
    umask(0o002)
    stage = synset_io.Stage(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), 0.01)
    synset = synset_io.SyntheticSet("fashion_mnist", 2, ("a", "b"), Preprocessor([0.5], [0.5]), [stage])
    directory = synset_io.save(synset, tmp_path / "set")
    assert {_mode(p) for p in directory.iterdir()} == {0o664}
