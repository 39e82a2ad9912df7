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
    """3x3 stem (no max-pool, as for 32-px CIFAR), four stages, global average pool."""

    def __init__(self, blocks: tuple[int, ...], channels: int, num_classes: int, image_size: int,
                 norm: str = "instancenorm", width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), make_norm(norm, width), nn.ReLU())
        stages, in_ch = [], width
        for i, n in enumerate(blocks):
            out_ch = width * 2**i
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
    # ResNet has its own fixed depth; ignore ConvNet-only options passed through configs.
    for key in ("depth", "act", "pool"):
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
