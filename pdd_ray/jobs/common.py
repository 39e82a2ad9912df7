"""Small pieces every job needs: a model factory for a dataset, and the augmentation from config."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pdd_ray.augment.dsa import DSA, DSAConfig
from pdd_ray.config import AugmentConfig, ModelConfig
from pdd_ray.models import create_model


def model_factory(model: ModelConfig, image_shape: tuple[int, ...], num_classes: int,
                  device: torch.device, **overrides) -> Callable[[], nn.Module]:
    """A zero-argument builder of fresh networks for images of ``image_shape`` on ``device``."""
    channels, size = image_shape[0], image_shape[-1]
    kwargs = {**model.kwargs(), **overrides}
    return lambda: create_model(model.arch, channels, num_classes, size, **kwargs).to(device)


def make_augment(config: AugmentConfig) -> DSA | None:
    """DSA from the augment section, or None when it is switched off."""
    return DSA(DSAConfig(config.strategy, config.mode)) if config.dsa else None
