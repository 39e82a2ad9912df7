"""From a model config to a builder of fresh networks: what every trainer of networks needs."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pdd_ray.models.registry import create_model


def model_factory(model, image_shape: tuple[int, ...], num_classes: int,
                  device: torch.device, **overrides) -> Callable[[], nn.Module]:
    """A zero-argument builder of fresh networks for images of ``image_shape`` on ``device``.

    ``model`` is a run config's ``config.ModelConfig`` (not imported: the config module
    imports the model registry to validate names).
    """
    channels, size = image_shape[0], image_shape[-1]
    kwargs = {**model.kwargs(), **overrides}
    return lambda: create_model(model.arch, channels, num_classes, size, **kwargs).to(device)
