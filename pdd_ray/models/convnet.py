"""The ConvNet of the dataset-distillation literature (DC, DSA, MTT, IDC, PDD)."""

from __future__ import annotations

from torch import nn

from pdd_ray.errors import UserError
from pdd_ray.models.norm import make_norm
from pdd_ray.models.registry import MODELS

ACTIVATIONS = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid}
POOLS = {"avgpool": lambda: nn.AvgPool2d(2, 2), "maxpool": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}


def default_depth(image_size: int) -> int:
    """Depth 3 for 28/32-px inputs, 4 for 64 px: what the reference recipes use."""
    return 4 if image_size >= 64 else 3


class ConvNet(nn.Module):
    """``depth`` x [conv3x3(width) -> norm -> act -> pool], then a linear classifier.

    As in the reference ConvNet, the first conv pads by 3 (not 1) when the
    input has one channel, so a 1x28x28 image leaves it at 32x32 and ends as
    the same 4x4 map a 32-px RGB image does (128*4*4 = 2048 features at width
    128, depth 3). ``mono_pad=False`` gives the plain padding-1 net instead.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128,
                 depth: int | None = None, norm: str = "instancenorm", act: str = "relu", pool: str = "avgpool",
                 mono_pad: bool = True):
        super().__init__()
        depth = default_depth(image_size) if depth is None else depth
        if width < 1 or depth < 1:
            raise UserError(f"ConvNet width and depth must be >= 1, got width={width} depth={depth}")
        if act not in ACTIVATIONS or pool not in POOLS:
            raise UserError(f"ConvNet act must be one of {sorted(ACTIVATIONS)} and pool one of {sorted(POOLS)}")
        layers, size, in_ch = [], image_size, channels
        for d in range(depth):
            pad = 3 if (mono_pad and channels == 1 and d == 0) else 1
            size += 2 * pad - 2  # a 3x3 conv with stride 1
            layers += [nn.Conv2d(in_ch, width, 3, padding=pad), make_norm(norm, width), ACTIVATIONS[act]()]
            if pool != "none":
                if size < 2:
                    raise UserError(f"ConvNet depth {depth} pools a {image_size}px image below 1px")
                size //= 2
            layers.append(POOLS[pool]())
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.embed_dim = width * size * size
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x):
        """Flattened features before the classifier (used by herding / k-center)."""
        return self.features(x).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


@MODELS.register("convnet")
def convnet(**kwargs) -> ConvNet:
    """The reference ConvNet (depth from image size unless given)."""
    return ConvNet(**kwargs)


@MODELS.register("convnet_bn")
def convnet_bn(**kwargs) -> ConvNet:
    """ConvNet with batch norm instead of instance norm."""
    return ConvNet(**{**kwargs, "norm": "batchnorm"})
