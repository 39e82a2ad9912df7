"""``create_dataset``: raw splits -> train / validation / test in network space, plus the fitted preprocessing.

A dataset is decoded once per machine and prepared once per process: the raw
splits come from the file cache of ``pdd_ray.data.cache`` (decoded on the
first load on a machine), and the same DataConfig over the same files returns
the same DataBundle object for the life of the process (``MEMO_SIZE`` bundles
kept), so an expert build, a validation check or a job that asks again costs
nothing. Bundles are shared, hence frozen: derive a new one with
``dataclasses.replace`` instead of assigning to a field, and never modify
their tensors in place. ``decode_count()`` says how many splits this process
decoded from the dataset's own files.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from pdd_ray.data.cache import decode_count, read_split, split_source
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.data.registry import get_spec
from pdd_ray.data.splits import LabeledImages, split_validation
from pdd_ray.errors import UserError

MEMO_SIZE = 2  # bundles kept per process: a run's dataset, and one more for a job that switches
_memo: OrderedDict[tuple, "DataBundle"] = OrderedDict()

__all__ = ["DataBundle", "create_dataset", "decode_count", "clear_memo"]


@dataclass(frozen=True)
class DataBundle:
    """Everything a run needs about its data (shared by every user in the process: frozen)."""

    name: str
    train: LabeledImages  # training split minus the validation hold-out
    val: LabeledImages  # for model selection; never the test set
    test: LabeledImages  # for the final report only
    preprocessor: Preprocessor
    class_names: tuple[str, ...]
    train_indices: torch.Tensor  # positions of ``train`` in the on-disk training split

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.train.images.shape[1:])


def create_dataset(config) -> DataBundle:
    """Load, split (seeded validation hold-out), and preprocess the dataset of a ``DataConfig``.

    The same config over unchanged files returns the bundle already made in this process.
    """
    train = split_source(config.dataset, config.root, "train", download=config.download)
    test = split_source(config.dataset, config.root, "test", download=config.download)
    # The files' digests, not the root: the same data found by another path is the same bundle.
    key = (config.dataset, train.digest, test.digest, config.val_size, config.train_per_class, config.zca,
           config.seed)
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    bundle = _prepare(config, read_split(train), read_split(test))
    _memo[key] = bundle
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return bundle


def clear_memo() -> None:
    """Forget the bundles made in this process (the next ``create_dataset`` prepares them again)."""
    _memo.clear()


def _prepare(config, raw_train, raw_test) -> DataBundle:
    spec = get_spec(config.dataset)
    train_idx, val_idx = split_validation(raw_train.labels, _val_size(config, len(raw_train.labels)), config.seed)
    if config.train_per_class is not None:
        train_idx = _cap_per_class(train_idx, raw_train.labels, config.train_per_class, config.seed)
    pixels = raw_train.to_float()
    mean, std = _mean_std(spec, pixels[train_idx])
    zca = spec.zca if config.zca is None else config.zca
    pre = Preprocessor.fit(pixels[train_idx], mean, std, zca=zca)
    num_classes = len(raw_train.class_names)
    return DataBundle(
        name=config.dataset,
        train=LabeledImages(pre(pixels[train_idx]), raw_train.labels[train_idx], num_classes),
        val=LabeledImages(pre(pixels[val_idx]), raw_train.labels[val_idx], num_classes),
        test=LabeledImages(pre(raw_test.to_float()), raw_test.labels, num_classes),
        preprocessor=pre, class_names=raw_train.class_names, train_indices=train_idx)


def _val_size(config, n_train: int) -> int:
    if config.val_size >= n_train:
        raise UserError(f"data.val_size={config.val_size} leaves no training data (the split has {n_train})")
    return config.val_size


def _cap_per_class(indices: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    kept = []
    for c in labels[indices].unique().tolist():
        members = indices[labels[indices] == c]
        kept.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(kept).sort().values


def _mean_std(spec, train_pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    # Datasets without reference statistics (image_folder) use their own training split's.
    if getattr(spec, "mean", None) is not None:
        return list(spec.mean), list(spec.std)
    return train_pixels.mean(dim=(0, 2, 3)).tolist(), train_pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
