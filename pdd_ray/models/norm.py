"""Normalisation layers by name, shared by every network family."""

from __future__ import annotations

from torch import nn

from pdd_ray.errors import UserError

NORMS = ("instancenorm", "batchnorm", "groupnorm", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer; ``instancenorm`` is GroupNorm with one group per channel.

    GroupNorm(C, C) is what the reference ConvNet calls instance norm: it is
    affine and keeps no running statistics, so it behaves identically in
    train and eval mode and inside a functional (flat-parameter) forward.
    """
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "groupnorm":
        return nn.GroupNorm(min(32, channels), channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"unknown norm '{kind}'; choose one of: {', '.join(NORMS)}")
