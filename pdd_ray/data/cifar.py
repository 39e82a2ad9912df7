"""CIFAR-10 / CIFAR-100 in their official "python version" layout.

The batch files are Python 2 pickles. Unpickling can run arbitrary code, so
we use an Unpickler that only resolves the few globals numpy arrays need and
refuses everything else.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdd_ray.data.splits import RawSplit
from pdd_ray.errors import UserError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR100_FILES = {"train": ("train",), "test": ("test",)}
CIFAR10_META = "batches.meta"
CIFAR100_META = "meta"

_ROW = 3 * 32 * 32

# (module, name) pairs a CIFAR pickle may reference. Files written by old numpy
# name numpy.core, new numpy writes numpy._core; Python 3 protocol-2 pickles of
# bytes go through _codecs.encode.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("codecs", "encode"),
}


def _numpy_multiarray():
    # Import the module under its current name so numpy 2 does not warn about numpy.core.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 1.26
        return importlib.import_module("numpy.core.multiarray")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that only rebuilds numpy arrays, dtypes and bytes."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; anything else raises UserError."""
        if (module, name) not in _ALLOWED:
            raise UserError(f"refusing to unpickle {module}.{name}: not part of a CIFAR file")
        if name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        return getattr(importlib.import_module(module), name)


def unpickle(path: Path) -> dict:
    """Safely load one CIFAR pickle (keys come back as bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the files were written by Python 2, whose str is bytes.
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except UserError as e:
        raise UserError(f"{path}: {e}") from e
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    except Exception as e:  # truncated / garbled pickles fail in many ways
        raise UserError(f"corrupt CIFAR pickle {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def _field(batch: dict, key: str, path: Path) -> Any:
    # Accept str keys too, in case a file was re-saved by Python 3.
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise UserError(f"{path}: missing key '{key}'")


def _decode_names(names: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(names, (list, tuple)):
        raise UserError(f"{path}: class names are not a list")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) from one batch file."""
    batch = unpickle(path)
    data = np.asarray(_field(batch, "data", path))
    labels = np.asarray(_field(batch, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        raise UserError(f"{path}: expected uint8 data [N, {_ROW}], got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: expected {len(data)} integer labels, got {labels.dtype} {labels.shape}")
    # Each row is the red plane, then green, then blue: exactly CHW.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_class_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names from a CIFAR meta file (``label_names`` or ``fine_label_names``)."""
    return _decode_names(_field(unpickle(path), key, path), path)


def _load(folder: Path, files: tuple[str, ...], label_key: str, meta: str, names_key: str) -> RawSplit:
    folder = Path(folder)
    parts = [read_batch(folder / name, label_key) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return RawSplit(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=read_class_names(folder / meta, names_key),
    )


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise UserError(f"unknown split '{split}'; choose train or test")


def load_cifar10(folder: Path, split: str) -> RawSplit:
    """Load a CIFAR-10 split from the ``cifar-10-batches-py`` folder."""
    _check_split(split)
    return _load(folder, CIFAR10_FILES[split], "labels", CIFAR10_META, "label_names")


def load_cifar100(folder: Path, split: str) -> RawSplit:
    """Load a CIFAR-100 split (fine labels) from the ``cifar-100-python`` folder."""
    _check_split(split)
    return _load(folder, CIFAR100_FILES[split], "fine_labels", CIFAR100_META, "fine_label_names")
