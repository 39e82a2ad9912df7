"""CIFAR pickles: exact round-trip and a restricted, code-free unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from pdd_ray.data import cifar
from pdd_ray.errors import UserError


def test_cifar10_round_trips_exactly(cifar10_dir):
    for split, n in (("train", 20), ("test", 5)):
        raw = cifar.load_cifar10(cifar10_dir.root, split)
        assert tuple(raw.images.shape) == (n, 3, 32, 32)
        np.testing.assert_array_equal(raw.images.numpy(), cifar10_dir.images[split])
        np.testing.assert_array_equal(raw.labels.numpy(), cifar10_dir.labels[split])
        assert raw.class_names == cifar10_dir.class_names
        assert raw.class_names[0] == "airplane" and isinstance(raw.class_names[0], str)


def test_cifar100_uses_fine_labels(cifar100_dir):
    for split in ("train", "test"):
        raw = cifar.load_cifar100(cifar100_dir.root, split)
        np.testing.assert_array_equal(raw.images.numpy(), cifar100_dir.images[split])
        np.testing.assert_array_equal(raw.labels.numpy(), cifar100_dir.labels[split])
        assert len(raw.class_names) == 100 and raw.class_names[7] == "class_007"


def test_rows_are_chw(cifar10_dir):
    # Row layout is 1024 red, then 1024 green, then 1024 blue values.
    raw = cifar.load_cifar10(cifar10_dir.root, "test")
    row = cifar.unpickle(cifar10_dir.root / "test_batch")[b"data"][0]
    assert raw.images[0, 1, 0, 0] == row[1024] and raw.images[0, 2, 31, 31] == row[3071]


def test_python3_protocol2_pickles_load_too(tmp_path):
    # Python 3 writes bytes through _codecs.encode and names numpy._core.
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [3, 1]}, protocol=2))
    images, labels = cifar.read_batch(path, "labels")
    np.testing.assert_array_equal(images.reshape(2, -1), data)
    assert labels.tolist() == [3, 1]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(cifar10_dir, tmp_path):
    marker = tmp_path / "pwned"
    (cifar10_dir.root / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(UserError, match="data_batch_1.*refusing to unpickle"):
        cifar.load_cifar10(cifar10_dir.root, "train")
    assert not marker.exists()


@pytest.mark.parametrize("global_name", [b"builtins\neval", b"numpy\nload", b"subprocess\nPopen"])
def test_other_globals_are_refused(tmp_path, global_name):
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + global_name + b"\n.")
    with pytest.raises(UserError, match="refusing"):
        cifar.unpickle(path)


def test_truncated_pickle_is_user_error(cifar10_dir):
    path = cifar10_dir.root / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="test_batch"):
        cifar.load_cifar10(cifar10_dir.root, "test")


def test_wrong_row_length_is_user_error(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(UserError, match="3072"):
        cifar.read_batch(path, "labels")


def test_missing_key_and_missing_file_are_user_errors(tmp_path, cifar10_dir):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2))
    with pytest.raises(UserError, match="fine_labels"):
        cifar.read_batch(path, "fine_labels")
    (cifar10_dir.root / "batches.meta").unlink()
    with pytest.raises(UserError, match="batches.meta"):
        cifar.load_cifar10(cifar10_dir.root, "test")
