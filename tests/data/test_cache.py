"""A dataset is decoded once per machine (file cache) and prepared once per process (memo)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pdd_ray.config import DataConfig
from pdd_ray.data import bundle, cache
from pdd_ray.data.bundle import create_dataset, decode_count


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test its own cache folder and an empty memo."""
    monkeypatch.setenv("PDD_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cache.DISABLE_ENV, raising=False)
    bundle.clear_memo()
    yield
    bundle.clear_memo()


def _config(root) -> DataConfig:
    return DataConfig(root=str(root), val_size=40)


def _assert_identical(a, b) -> None:
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)
    assert torch.equal(a.train_indices, b.train_indices) and a.class_names == b.class_names
    assert all(torch.equal(x, y) for x, y in zip(a.preprocessor.to_tensors().values(),
                                                 b.preprocessor.to_tensors().values()))


def test_dataset_decoded_once_per_process(tiny_fashion_root):
    before = decode_count()
    first = create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 2  # the train and the test split, once each
    again = create_dataset(_config(tiny_fashion_root))
    assert again is first and decode_count() == before + 2


def test_a_second_loader_reads_the_cache_bit_identical_to_a_fresh_decode(tiny_fashion_root, monkeypatch):
    cached_first = create_dataset(_config(tiny_fashion_root))
    bundle.clear_memo()  # a new loader in the same process: only the file cache remains
    before = decode_count()
    from_cache = create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before and from_cache is not cached_first
    monkeypatch.setenv(cache.DISABLE_ENV, "0")
    bundle.clear_memo()
    fresh = create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 2  # cache off: decoded from the IDX files again
    _assert_identical(fresh, from_cache)


def test_a_second_process_reads_the_cache_instead_of_decoding(tiny_fashion_root, tmp_path):
    create_dataset(_config(tiny_fashion_root))
    code = ("from pdd_ray.config import DataConfig\nfrom pdd_ray.data.bundle import create_dataset, decode_count\n"
            f"create_dataset(DataConfig(root={str(tiny_fashion_root)!r}, val_size=40))\nprint(decode_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PDD_RAY_CACHE": str(tmp_path / "cache")})
    assert out.stdout.strip().splitlines()[-1] == "0"


def _entry(tiny_fashion_root, split="train"):
    return cache.split_source("fashion_mnist", tiny_fashion_root, split).entry


def test_a_corrupted_entry_is_decoded_again_and_replaced(tiny_fashion_root, caplog):
    create_dataset(_config(tiny_fashion_root))
    images = _entry(tiny_fashion_root) / "images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # one pixel flipped: the crc32 no longer matches
    images.write_bytes(bytes(data))
    bundle.clear_memo()
    before = decode_count()
    create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 1 and "fails its crc32" in caplog.text
    bundle.clear_memo()
    create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 1  # the entry was rewritten whole


def test_a_pickle_in_the_cache_is_never_loaded(tiny_fashion_root, tmp_path):
    create_dataset(_config(tiny_fashion_root))
    entry = _entry(tiny_fashion_root)
    marker = tmp_path / "unpickled"
    np.save(entry / "labels.npy", np.array([_Boom(str(marker))], dtype=object), allow_pickle=True)
    bundle.clear_memo()
    before = decode_count()
    create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 1 and not marker.exists()


class _Boom:
    """Unpickling this touches a file: proof that a loader ran pickled code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_changed_files_are_a_new_entry(tiny_fashion_root):
    from tests.conftest import write_fashion_like
    first = create_dataset(_config(tiny_fashion_root))
    write_fashion_like(tiny_fashion_root, per_class_train=31)
    before = decode_count()
    second = create_dataset(_config(tiny_fashion_root))
    assert decode_count() == before + 2 and len(second.train) != len(first.train)


def test_the_cache_can_be_turned_off(tiny_fashion_root, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DISABLE_ENV, "off")
    create_dataset(_config(tiny_fashion_root))
    assert not (tmp_path / "cache" / "datasets").exists()


def test_entries_carry_their_checks_in_json(tiny_fashion_root):
    create_dataset(_config(tiny_fashion_root))
    meta = json.loads((_entry(tiny_fashion_root, "test") / cache.META).read_text())
    assert meta["arrays"]["images"]["shape"] == [100, 1, 28, 28] and len(meta["class_names"]) == 10


def test_bundles_are_frozen_so_sharing_them_is_safe(tiny_fashion_root):
    import dataclasses
    data = create_dataset(_config(tiny_fashion_root))
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.train = data.val


def test_a_file_added_to_an_image_tree_changes_the_digest(tmp_path):
    from PIL import Image
    root = tmp_path / "folder"
    for k in range(2):
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), k).save(root / "train" / "a" / f"{k}.png")
    first = cache.split_source("image_folder", root, "train").digest
    assert cache.split_source("image_folder", root, "train").digest == first
    Image.new("L", (4, 4), 9).save(root / "train" / "a" / "2.png")
    assert cache.split_source("image_folder", root, "train").digest != first
