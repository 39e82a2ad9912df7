"""Tiny-ImageNet: wnids order, val annotations, JPEG decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pdd_ray.data import tiny_imagenet
from pdd_ray.errors import UserError


@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trips_exactly(tiny_dir, split):
    raw = tiny_imagenet.load_tiny_imagenet(tiny_dir.root, split)
    n = 12 if split == "train" else 6
    assert tuple(raw.images.shape) == (n, 3, 64, 64)
    np.testing.assert_array_equal(raw.images.numpy(), tiny_dir.images[split])
    np.testing.assert_array_equal(raw.labels.numpy(), tiny_dir.labels[split])
    assert raw.class_names == tiny_dir.class_names


def test_class_order_is_wnids_file_order_and_natural_file_order(tiny_dir):
    paths, labels, _ = tiny_imagenet.split_files(tiny_dir.root, "train")
    assert [p.parent.parent.name for p in paths[::4]] == list(tiny_dir.ids)
    assert [p.stem.split("_")[1] for p in paths[:4]] == ["0", "1", "2", "10"]
    assert labels == [0] * 4 + [1] * 4 + [2] * 4


def test_names_fall_back_to_wnids_without_words_txt(tiny_dir):
    (tiny_dir.root / "words.txt").unlink()
    assert tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "test").class_names == tiny_dir.ids


def test_grayscale_jpeg_becomes_rgb(tiny_dir):
    path = tiny_dir.files["test"][0]
    Image.new("L", (64, 64), color=77).save(path, format="JPEG")
    raw = tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "test")
    assert raw.images.shape[1] == 3 and (raw.images[0] == 77).all()


def test_corrupt_jpeg_is_user_error_naming_file(tiny_dir):
    path = tiny_dir.files["train"][5]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match=path.name):
        tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "train")


def test_wrong_size_is_user_error(tiny_dir):
    Image.new("RGB", (32, 32)).save(tiny_dir.files["test"][2], format="JPEG")
    with pytest.raises(UserError, match="expected 64x64"):
        tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "test")


def test_unknown_wnid_in_annotations_is_user_error(tiny_dir):
    ann = tiny_dir.root / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="line 7"):
        tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "test")


def test_missing_pieces_are_user_errors(tiny_dir):
    tiny_dir.files["test"][3].unlink()
    with pytest.raises(UserError, match="val_3.JPEG"):
        tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "test")
    (tiny_dir.root / "wnids.txt").unlink()
    with pytest.raises(UserError, match="wnids.txt"):
        tiny_imagenet.load_tiny_imagenet(tiny_dir.root, "train")
