"""The model registry and its single front door, ``create_model``."""

from __future__ import annotations

from torch import nn

from pdd_ray.errors import UserError
from pdd_ray.registry import Registry

MODELS: Registry = Registry("model")


def create_model(name: str, channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """Build a registered network for images of ``channels`` x ``image_size``²."""
    for field, value in (("channels", channels), ("num_classes", num_classes), ("image_size", image_size)):
        if value < 1:
            raise UserError(f"model {field} must be >= 1, got {value}")
    return MODELS.get(name)(channels=channels, num_classes=num_classes, image_size=image_size, **kwargs)
