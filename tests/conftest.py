"""Shared fixtures: tiny datasets (in memory and in Fashion-MNIST's on-disk IDX format)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pdd_ray.data.splits import LabeledImages

IDX_DTYPE_CODES = {np.uint8: 0x08}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8) in the IDX format: zero, zero, dtype code, ndim, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def patterned_images(labels: np.ndarray, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 images whose class is visible: a bright square at a class-specific spot, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), channels, size, size), dtype=np.int64)
    block = size // 4
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        images[i, :, r * block:(r + 1) * block, col * block:(col + 1) * block] += 180
    return images.clip(0, 255).astype(np.uint8)


def write_fashion_like(root: Path, per_class_train: int = 30, per_class_test: int = 10, classes: int = 10) -> Path:
    """A tiny Fashion-MNIST in its exact on-disk layout (gzipped IDX files)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", per_class_train, 1), ("t10k", per_class_test, 2)):
        labels = np.repeat(np.arange(classes), per_class)
        np.random.default_rng(seed).shuffle(labels)
        images = patterned_images(labels, seed=seed)[:, 0]
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


@pytest.fixture(autouse=True, scope="session")
def session_cache_dir(tmp_path_factory):
    """Decoded datasets and URI mirrors go to this session's own cache, never the user's ~/.cache."""
    previous = os.environ.get("PDD_RAY_CACHE")
    os.environ["PDD_RAY_CACHE"] = str(tmp_path_factory.mktemp("pdd-ray-cache"))
    yield
    if previous is None:
        os.environ.pop("PDD_RAY_CACHE", None)
    else:
        os.environ["PDD_RAY_CACHE"] = previous


@pytest.fixture
def tiny_fashion_root(tmp_path) -> Path:
    """A folder holding a 300-train / 100-test Fashion-MNIST look-alike in IDX format."""
    return write_fashion_like(tmp_path / "fashion")


@pytest.fixture
def tiny_labeled() -> LabeledImages:
    """40 random 1x8x8 images over 4 classes (10 each), already 'in network space'."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(10)
    return LabeledImages(torch.randn(40, 1, 8, 8, generator=gen), labels, 4)


@pytest.fixture
def tiny_separable() -> LabeledImages:
    """Easy 4-class 1x8x8 data (class = bright quadrant): a tiny net learns it in a few epochs."""
    labels = np.repeat(np.arange(4), 20)
    images = torch.from_numpy(patterned_images(labels, size=8)).float() / 255.0
    return LabeledImages(images, torch.from_numpy(labels).long(), 4)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks run fastest on one thread, and it keeps timings sane when the CPU is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def local_ray():
    """A local Ray of its own (2 CPUs; "local": never a head `ray start` left running) for this test; its GCS address."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
