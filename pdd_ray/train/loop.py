"""One epoch of SGD on labelled images, accuracy, devices and seeding."""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pdd_ray.augment.cutmix import cutmix_loss
from pdd_ray.errors import UserError
from pdd_ray.precision import autocast

# on_batch(indices, logits, labels) lets callers watch training without owning the loop
# (forgetting-event counting does exactly that).
BatchHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for absent CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but no CUDA GPU is visible")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD as in the evaluation protocol (momentum 0.9, wd 5e-4 by default)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                batch_size: int = 256, augment=None, generator: torch.Generator | None = None,
                on_batch: BatchHook | None = None, cutmix: float = 0.0, precision: str = "fp32") -> float:
    """One pass over (images, labels) in a random order; returns the mean loss.

    Images stay wherever they are (CPU or GPU); each batch is moved to the
    model's device, so small synthetic sets can live on the GPU whole.
    ``cutmix``: probability that a batch is CutMix-ed after augmentation
    (``pdd_ray.augment.cutmix``, IDC's recipe); 0 never draws for it.
    ``precision``: ``fp32`` or ``bf16`` (the forward and loss under autocast;
    parameters, gradients and the optimiser stay fp32; ``pdd_ray.precision``).
    """
    device = next(model.parameters()).device
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    total, count = 0.0, 0
    for batch_idx in order.split(batch_size):
        x = images[batch_idx.to(images.device)].to(device, non_blocking=True)
        y = labels[batch_idx.to(labels.device)].to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, generator=generator)
        with autocast(precision, device):
            if cutmix > 0:
                loss, logits = cutmix_loss(model, x, y, cutmix, generator)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_batch is not None:
            on_batch(batch_idx, logits.detach(), y)
        total += loss.item() * len(y)
        count += len(y)
    return total / max(count, 1)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024,
             precision: str = "fp32") -> float:
    """Top-1 accuracy of ``model`` on (images, labels), in eval mode (forward under ``precision``)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        with autocast(precision, device):
            logits = model(x.to(device))
        correct += (logits.argmax(1) == y.to(device)).sum().item()
    model.train(was_training)
    return correct / max(len(labels), 1)
