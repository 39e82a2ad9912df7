"""Labelled image tensors with per-class indexing, and the seeded validation split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RawSplit:
    """One split exactly as read from disk: uint8 images [N, C, H, W], int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"RawSplit images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("RawSplit labels must be [N] matching the images")

    def to_float(self) -> torch.Tensor:
        """Images scaled to [0, 1] float32."""
        return self.images.float().div_(255.0)


class LabeledImages:
    """Float images (as the network sees them) with labels and a per-class index.

    Per-class indices are computed once so that sampling ``n`` images of class
    ``c`` is a single gather, which expert training and matching do constantly.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
        if images.shape[0] != labels.shape[0]:
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes
        self._by_class = [torch.nonzero(self.labels == c, as_tuple=True)[0] for c in range(num_classes)]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def indices_of(self, c: int) -> torch.Tensor:
        """Indices (into this set) of the examples of class ``c``."""
        return self._by_class[c]

    def sample_indices(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` distinct random indices of class ``c`` (fewer if the class is smaller)."""
        idx = self._by_class[c]
        perm = torch.randperm(len(idx), generator=generator)[:n]
        return idx[perm]

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random images of class ``c``."""
        return self.images[self.sample_indices(c, n, generator)]

    def subset(self, indices: torch.Tensor) -> "LabeledImages":
        """A new LabeledImages holding only ``indices``."""
        return LabeledImages(self.images[indices], self.labels[indices], self.num_classes)

    def map_images(self, fn) -> "LabeledImages":
        """A new LabeledImages with ``fn`` applied to the image tensor."""
        return LabeledImages(fn(self.images), self.labels, self.num_classes)


def split_validation(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, class-stratified (train_idx, val_idx) split of a training set.

    Stratified so a small validation split still sees every class; the same
    seed always gives the same split, which checkpoint selection relies on.
    """
    n = labels.shape[0]
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    classes = labels.unique()
    per_class = val_size // len(classes)
    extra = val_size - per_class * len(classes)
    val_parts = []
    for i, c in enumerate(classes.tolist()):
        members = perm[labels[perm] == c]
        val_parts.append(members[: per_class + (1 if i < extra else 0)])
    val_idx = torch.cat(val_parts) if val_parts else torch.empty(0, dtype=torch.long)
    mask = torch.ones(n, dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask, as_tuple=True)[0], val_idx.sort().values
