"""Feature and parameter counts of the nets against the reference (PDD / MTT) definitions.

The expected numbers are computed here from the architecture, layer by layer,
and were checked once against VITA-Group/ProgressiveDD networks.py
(ConvNet, ResNet10/18 and their BN variants).
"""

import pytest
import torch

from pdd_ray.models import create_model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def convnet_params(channels, width, depth, feat, classes):
    # conv3x3 (weight + bias) and an affine norm (2 per channel) per layer, then the linear head.
    total, in_ch = 0, channels
    for _ in range(depth):
        total += in_ch * width * 9 + width + 2 * width
        in_ch = width
    return total + feat * classes + classes


def resnet_params(blocks, channels, classes):
    # bias-free convs, 2 affine params per norm channel, 64-128-256-512 stages.
    total = channels * 64 * 9 + 2 * 64
    in_ch = 64
    for i, n in enumerate(blocks):
        out = 64 * 2**i
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            total += in_ch * out * 9 + 2 * out + out * out * 9 + 2 * out
            if stride != 1 or in_ch != out:
                total += in_ch * out + 2 * out
            in_ch = out
    return total + 512 * classes + classes


@pytest.mark.parametrize("channels,size,depth", [(1, 28, 3), (3, 32, 3), (3, 64, 4)])
def test_convnet_features_are_2048_at_width_128(channels, size, depth):
    model = create_model("convnet", channels, 10, size, width=128, depth=depth)
    feats = model.embed(torch.randn(2, channels, size, size))
    assert model.embed_dim == feats.shape[1] == 128 * 4 * 4 == 2048
    assert model.classifier.in_features == 2048
    assert n_params(model) == convnet_params(channels, 128, depth, 2048, 10)


def test_mono_convnet_pads_its_first_conv_by_three():
    model = create_model("convnet", 1, 10, 28, width=128)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(3, 3), (1, 1), (1, 1)]
    assert n_params(model) == 317706  # = convnet_params(1, 128, 3, 2048, 10), the reference count
    rgb = create_model("convnet", 3, 10, 32, width=128)
    assert all(c.padding == (1, 1) for c in rgb.features if isinstance(c, torch.nn.Conv2d))
    assert n_params(rgb) == 320010


def test_plain_padding_stays_reachable():
    model = create_model("convnet", 1, 10, 28, width=128, mono_pad=False)
    assert model.embed_dim == 128 * 3 * 3 == 1152
    assert model.embed(torch.randn(1, 1, 28, 28)).shape == (1, 1152)


@pytest.mark.parametrize("name,blocks,expected", [
    ("resnet18", (2, 2, 2, 2), 11_173_962), ("resnet18_bn", (2, 2, 2, 2), 11_173_962),
    ("resnet10", (1, 1, 1, 1), 4_903_242), ("resnet10_bn", (1, 1, 1, 1), 4_903_242)])
@pytest.mark.parametrize("width", [None, 8, 128])
def test_resnets_use_standard_widths_whatever_width_says(name, blocks, expected, width):
    kwargs = {} if width is None else {"width": width}
    model = create_model(name, 3, 10, 32, **kwargs)
    assert resnet_params(blocks, 3, 10) == expected
    assert n_params(model) == expected
    assert model.embed_dim == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_norms_follow_the_reference_defaults():
    # networks.py: ResNet10/18 default to instance norm (GroupNorm(C, C)), the *BN variants to batch norm.
    plain = create_model("resnet18", 3, 10, 32)
    bn = create_model("resnet18_bn", 3, 10, 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert all(m.num_groups == m.num_channels for m in plain.modules() if isinstance(m, torch.nn.GroupNorm))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in bn.modules())
