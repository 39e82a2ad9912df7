"""``create_dataset``: raw splits -> train / validation / test in network space, plus the fitted preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.data.registry import get_spec, load_raw
from pdd_ray.data.splits import LabeledImages, split_validation
from pdd_ray.errors import UserError


@dataclass
class DataBundle:
    """Everything a run needs about its data."""

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
    """Load, split (seeded validation hold-out), and preprocess the dataset of a ``DataConfig``."""
    spec = get_spec(config.dataset)
    raw_train = load_raw(config.dataset, config.root, "train", download=config.download)
    raw_test = load_raw(config.dataset, config.root, "test", download=config.download)
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
