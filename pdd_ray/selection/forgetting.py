"""Forgetting events (Toneva et al. 2019): how often an example flips from correct to wrong in training.

The scores are a reusable artifact: PDD's easy-example pruning (Sec. 4.2)
partitions the training set by them, and expert training can count them for
free while it runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pdd_ray.errors import UserError
from pdd_ray.provenance import atomic_write

NEVER_LEARNED = float("inf")  # Toneva's convention: never-learned examples rank as most forgettable


class ForgettingTracker:
    """A ``train_epoch`` batch hook that counts correct->wrong flips per example."""

    def __init__(self, num_examples: int):
        self.flips = torch.zeros(num_examples, dtype=torch.int32)
        self.last_correct = torch.zeros(num_examples, dtype=torch.bool)
        self.ever_correct = torch.zeros(num_examples, dtype=torch.bool)

    def __call__(self, indices: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        correct = (logits.argmax(1) == labels).cpu()
        indices = indices.cpu()
        forgotten = self.last_correct[indices] & ~correct
        self.flips[indices] += forgotten.int()
        self.last_correct[indices] = correct
        self.ever_correct[indices] |= correct

    def scores(self) -> torch.Tensor:
        """Forgetting counts as float, ``inf`` for examples never classified correctly."""
        out = self.flips.float()
        out[~self.ever_correct] = NEVER_LEARNED
        return out


def save_scores(path: str | Path, scores: torch.Tensor, indices: torch.Tensor) -> Path:
    """Store scores keyed by position in the on-disk training split (safetensors, atomic)."""
    tensors = {"scores": scores.float().contiguous(), "indices": indices.long().contiguous()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_scores(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) written by ``save_scores``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"forgetting scores not found: {path}")
    tensors = load_file(str(path))
    return tensors["scores"], tensors["indices"]
