"""CIFAR-style ResNet-10/18 for cross-architecture evaluation of synthetic sets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pdd_ray.models.norm import make_norm
from pdd_ray.models.registry import MODELS


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (projection when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), make_norm(norm, out_ch))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem (no max-pool, as for 32-px CIFAR), four stages, global average pool.

    Stage widths are ``base``, 2x, 4x, 8x: the standard 64-128-256-512 by
    default, as in the reference ResNet-10/18 (about 11.2M parameters for
    ResNet-18 on 3x32x32, 10 classes). The registry entries always use 64;
    ``model.width`` is a ConvNet option and does not reach them.
    """

    def __init__(self, blocks: tuple[int, ...], channels: int, num_classes: int, image_size: int,
                 norm: str = "instancenorm", base: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, base, 3, 1, 1, bias=False), make_norm(norm, base), nn.ReLU())
        stages, in_ch = [], base
        for i, n in enumerate(blocks):
            out_ch = base * 2**i
            for j in range(n):
                stages.append(BasicBlock(in_ch, out_ch, 2 if (i > 0 and j == 0) else 1, norm))
                in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.embed_dim = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)

    def embed(self, x):
        """Globally pooled features before the classifier."""
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


def _resnet(blocks, kwargs) -> ResNet:
    # ResNet has its own fixed depth and widths (64-128-256-512); ignore the
    # ConvNet-only options configs pass through, ``width`` included.
    for key in ("depth", "act", "pool", "width", "mono_pad"):
        kwargs.pop(key, None)
    return ResNet(blocks, **kwargs)


@MODELS.register("resnet10")
def resnet10(**kwargs) -> ResNet:
    """ResNet-10 (one block per stage); instance norm unless ``norm`` says otherwise."""
    return _resnet((1, 1, 1, 1), kwargs)


@MODELS.register("resnet18")
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (two blocks per stage)."""
    return _resnet((2, 2, 2, 2), kwargs)


@MODELS.register("resnet10_bn")
def resnet10_bn(**kwargs) -> ResNet:
    """ResNet-10 with batch norm (the cross-architecture choice for IDC sets)."""
    return _resnet((1, 1, 1, 1), {**kwargs, "norm": "batchnorm"})


@MODELS.register("resnet18_bn")
def resnet18_bn(**kwargs) -> ResNet:
    """ResNet-18 with batch norm."""
    return _resnet((2, 2, 2, 2), {**kwargs, "norm": "batchnorm"})
