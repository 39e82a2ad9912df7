"""IDX reading: exact round-trip, gzip detection by content, corrupt files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from pdd_ray.data import idx
from pdd_ray.errors import UserError

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_parse_round_trips_every_type(dtype, idx_encode):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    out = idx.parse_idx(idx_encode(arr))
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("fixture", ["fashion_raw", "fashion_gz"])
def test_split_round_trips_exactly(fixture, request):
    written = request.getfixturevalue(fixture)
    for split in ("train", "test"):
        raw = idx.load_idx_split(written.root, split, CLASSES)
        assert raw.images.dtype == torch.uint8 and raw.labels.dtype == torch.int64
        np.testing.assert_array_equal(raw.images.numpy(), written.images[split])
        np.testing.assert_array_equal(raw.labels.numpy(), written.labels[split])
        assert raw.class_names == CLASSES


def test_gz_and_raw_are_identical(fashion_raw, fashion_gz):
    a = idx.load_idx_split(fashion_raw.root, "train", CLASSES)
    b = idx.load_idx_split(fashion_gz.root, "train", CLASSES)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_gzip_detected_by_content_not_name(tmp_path, idx_encode):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    gz_named_plain = tmp_path / "plain-name"
    gz_named_plain.write_bytes(gzip.compress(idx_encode(arr)))
    plain_named_gz = tmp_path / "x.gz"
    plain_named_gz.write_bytes(idx_encode(arr))
    np.testing.assert_array_equal(idx.read_idx(gz_named_plain), arr)
    np.testing.assert_array_equal(idx.read_idx(plain_named_gz), arr)
    assert idx.read_idx_shape(gz_named_plain) == (2, 3) == idx.read_idx_shape(plain_named_gz)


def test_read_idx_shape_matches_counts(fashion_gz, fashion_raw):
    for written in (fashion_gz, fashion_raw):
        images, labels = idx.split_files(written.root, "train")
        assert idx.read_idx_shape(images) == (12, 28, 28)
        assert idx.read_idx_shape(labels) == (12,)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:-1],  # truncated values
        lambda data: data[:6],  # truncated header
        lambda data: b"\x01\x00" + data[2:],  # bad magic
        lambda data: data[:2] + b"\x42" + data[3:],  # unknown type byte
        lambda data: data + b"\x00",  # trailing garbage
    ],
)
def test_corrupt_raw_file_is_user_error_naming_path(tmp_path, corrupt, idx_encode):
    path = tmp_path / "bad-idx"
    path.write_bytes(corrupt(idx_encode(np.zeros((3, 4, 4), np.uint8))))
    with pytest.raises(UserError, match="bad-idx"):
        idx.read_idx(path)


def test_truncated_gzip_is_user_error(tmp_path, idx_encode):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_encode(np.zeros((3, 4, 4), np.uint8)))[:-10])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        idx.read_idx(path)
    path.write_bytes(gzip.compress(idx_encode(np.zeros((3, 4, 4), np.uint8)))[:8])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        idx.read_idx_shape(path)


def test_missing_file_is_user_error(fashion_raw):
    (fashion_raw.root / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="missing train-labels-idx1-ubyte"):
        idx.load_idx_split(fashion_raw.root, "train", CLASSES)


def test_label_count_mismatch_is_user_error(fashion_raw, idx_encode):
    (fashion_raw.root / "train-labels-idx1-ubyte").write_bytes(idx_encode(np.zeros(5, np.uint8)))
    with pytest.raises(UserError, match="5 labels"):
        idx.load_idx_split(fashion_raw.root, "train", CLASSES)


def test_raw_file_preferred_when_both_exist(fashion_raw):
    # A folder where someone gunzipped but kept a stale .gz: raw wins, deterministically.
    base = fashion_raw.root / "t10k-labels-idx1-ubyte"
    base.with_name(base.name + ".gz").write_bytes(b"garbage")
    assert idx.find_idx_file(fashion_raw.root, base.name) == base
