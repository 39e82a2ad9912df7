"""Tests for IDC multi-formation (pdd_ray.distill.formation)."""

import pytest
import torch
import torch.nn.functional as F

from pdd_ray.distill.formation import decode, decode_labels, encode_init, patch_size



def quadrant_image(values, size=4, channels=2):
    """One [C, size, size] image whose 2x2 quadrants are constant: values = (TL, TR, BL, BR)."""
    img = torch.empty(channels, size, size)
    half = size // 2
    img[:, :half, :half], img[:, :half, half:] = values[0], values[1]
    img[:, half:, :half], img[:, half:, half:] = values[2], values[3]
    return img


def test_decode_shape_and_row_major_order_grouped_per_image():
    stored = torch.stack([quadrant_image((1.0, 2.0, 3.0, 4.0)), quadrant_image((5.0, 6.0, 7.0, 8.0))])
    out = decode(stored, 2)
    assert out.shape == (8, 2, 4, 4)
    # A constant patch upsamples to a constant image, so each output is one patch value.
    expected = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected)
    assert decode_labels(torch.tensor([3, 7]), 2).tolist() == [3, 3, 3, 3, 7, 7, 7, 7]


def test_decode_upsamples_each_patch_bilinearly():
    x = torch.randn(2, 3, 8, 8)
    out = decode(x, 2)
    patch = x[1, :, 4:, :4]  # image 1, bottom-left patch -> output row 1*4 + 2
    ref = F.interpolate(patch[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out[6], ref)


def test_factor_one_is_identity():
    x = torch.randn(3, 1, 5, 5)
    assert decode(x, 1) is x
    assert encode_init(x, 1) is x
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(decode_labels(labels, 1), labels)


def test_gradients_flow_through_decode():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: decode(t, 2), (x,))
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    decode(x, 2).pow(2).sum().backward()
    assert (x.grad != 0).all()  # every stored pixel reaches some decoded pixel


def test_encode_init_is_differentiable():
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: encode_init(t, 2), (x,))


def test_decode_of_encode_init_gives_the_downsampled_originals():
    real = torch.randn(8, 3, 8, 8)
    stored = encode_init(real, 2, mode="bilinear")
    assert stored.shape == (2, 3, 8, 8)
    low = F.interpolate(real, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    ref = F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(decode(stored, 2), ref)


def test_decode_of_encode_init_is_close_to_smooth_originals():
    # Low-frequency images lose little at half resolution.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    phases = torch.rand(8, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * 6.28
    real = torch.sin(2.0 * xx + yy + phases)
    err = decode(encode_init(real, 2, mode="bilinear"), 2) - real
    assert err.abs().mean() < 0.05


def test_sizes_not_divisible_by_the_factor():
    assert patch_size(7, 7, 2) == (4, 4)
    real = torch.randn(9, 1, 7, 7)
    stored = encode_init(real, 3, mode="bilinear")
    assert stored.shape == (1, 1, 7, 7)
    out = decode(stored, 3)
    assert out.shape == (9, 1, 7, 7)
    # Patches inside the image round-trip exactly (the top-left one has no padding).
    low = F.interpolate(real[:1], size=(3, 3), mode="bilinear", align_corners=False, antialias=True)
    ref = F.interpolate(low, size=(7, 7), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:1], ref)


def test_encode_init_default_is_idc_nearest_mix_init():
    """IDC's init_type='mix': each patch is F.interpolate(real, size) (nearest): every other pixel at factor 2."""
    real = torch.randn(8, 1, 28, 28)
    stored = encode_init(real, 2)
    torch.testing.assert_close(stored[0, :, :14, 14:], real[1, :, ::2, ::2], rtol=0, atol=0)  # patch (0, 1)
    torch.testing.assert_close(stored[1, :, 14:, :14], real[6, :, ::2, ::2], rtol=0, atol=0)  # patch (1, 0)
    with pytest.raises(ValueError):
        encode_init(real, 2, mode="area")


@pytest.mark.parametrize("factor", [0, -1, 2.0, True, 9])
def test_bad_factor_is_rejected(factor):
    with pytest.raises(ValueError):
        decode(torch.randn(1, 1, 8, 8), factor)


def test_encode_init_needs_whole_groups():
    with pytest.raises(ValueError, match="multiple"):
        encode_init(torch.randn(5, 1, 8, 8), 2)
