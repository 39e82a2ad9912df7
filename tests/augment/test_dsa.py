"""Tests for Differentiable Siamese Augmentation (pdd_ray.augment.dsa)."""

import pytest
import torch

from pdd_ray.augment import DSA, OPS, DSAConfig, DSAParams
from pdd_ray.errors import UserError

ALL = DSA(DSAConfig(mode="all"))
SINGLE = DSA(DSAConfig(mode="single"))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n=4, c=3, h=8, w=10, seed=0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(seed), dtype=dtype)


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """torch.roll by (dy, dx) with the wrapped-around pixels zeroed."""
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    h, w = x.shape[-2:]
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, w + dx :] = 0
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., h + dy :, :] = 0
    return out


def one_op(op: str, n: int = 1, h: int = 6, w: int = 6, seed: int = 0) -> DSAParams:
    """A random draw of a single op, sampled through the public API."""
    return DSA(DSAConfig(strategy=op, mode="all")).sample(n, (h, w), gen(seed))


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize("strategy", ["", "colour", "crop_blur", "crop__flip", "crop_crop", "CROP"])
def test_invalid_strategy_raises_user_error(strategy):
    with pytest.raises(UserError):
        DSAConfig(strategy=strategy)


def test_invalid_mode_raises_user_error():
    with pytest.raises(UserError):
        DSAConfig(mode="some")


def test_default_is_mtt_strategy():
    cfg = DSAConfig()
    assert cfg.ops == OPS and cfg.mode == "single"


# ---------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("dsa", [ALL, SINGLE], ids=["all", "single"])
def test_same_seed_same_output(dsa):
    x = images()
    for seed in range(10):
        assert torch.equal(dsa(x, gen(seed)), dsa(x, gen(seed)))
    assert not torch.equal(ALL(x, gen(0)), ALL(x, gen(1)))


@pytest.mark.parametrize("dsa", [ALL, SINGLE], ids=["all", "single"])
def test_siamese_shares_params_across_batch_sizes(dsa):
    real = images(n=5)
    for seed in range(20):  # enough seeds for `single` to hit every op
        syn = real[:3].clone()
        out_real, out_syn = dsa.siamese(real, syn, generator=gen(seed))
        assert out_real.shape == real.shape and out_syn.shape == syn.shape
        torch.testing.assert_close(out_real[:3], out_syn, rtol=0, atol=0)
        # one draw sized for the largest batch == siamese
        params = dsa.sample(5, (8, 10), gen(seed))
        torch.testing.assert_close(dsa.apply(syn, params), out_syn, rtol=0, atol=0)


def test_siamese_rejects_mismatched_sizes():
    with pytest.raises(ValueError):
        ALL.siamese(images(h=8), images(h=9))


def test_apply_rejects_short_draw():
    params = ALL.sample(2, (8, 10), gen(0))
    with pytest.raises(ValueError):
        ALL.apply(images(n=3), params)


# ---------------------------------------------------------------------------- single mode


def test_single_mode_applies_exactly_one_op_and_covers_all():
    seen = set()
    g = gen(0)
    for _ in range(200):
        params = SINGLE.sample(4, (8, 8), g)
        assert len(params.ops) == 1
        seen.add(params.ops[0])
    assert seen == set(OPS)


def test_all_mode_samples_every_op():
    assert ALL.sample(4, (8, 8), gen(0)).ops == OPS


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_each_op(op):
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=gen(1), requires_grad=True)
    params = one_op(op, seed=3)
    dsa = DSA(DSAConfig(strategy=op, mode="all"))
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,))


def test_gradcheck_color_three_channels():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen(1), requires_grad=True)
    params = one_op("color", n=2, h=4, w=5)
    assert torch.autograd.gradcheck(lambda t: SINGLE.apply(t, params), (x,))


def test_all_mode_gradients_reach_input_and_input_untouched():
    x = images(n=3).requires_grad_()
    before = x.detach().clone()
    ALL(x, gen(0)).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.equal(x.detach(), before)


# ---------------------------------------------------------------------------- each op


def test_flip_mirrors_exactly():
    x = images(n=2, dtype=torch.float64)
    params = DSAParams(ops=("flip",), values={"flip": torch.tensor([True, False])})
    out = ALL.apply(x, params)
    torch.testing.assert_close(out[0], x[0].flip(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dx,dy", [(0, 0), (1, 0), (0, -2), (-1, 1), (3, 2)])
def test_crop_equals_roll_with_zero_fill(dx, dy):
    x = images(n=1, c=2, h=7, w=9)
    params = DSAParams(ops=("crop",), values={"crop_shift": torch.tensor([[dx, dy]])})
    torch.testing.assert_close(ALL.apply(x, params), shifted(x, dx, dy), rtol=0, atol=1e-5)


def test_crop_shift_range():
    shift = one_op("crop", n=2000, h=32, w=16).values["crop_shift"]
    assert shift[:, 0].abs().max() == 2 and shift[:, 1].abs().max() == 4  # int(0.125*size+0.5)


def test_rotate_zero_and_scale_one_are_identity():
    x = images(n=2, h=7, w=9)
    zero = DSAParams(ops=("rotate",), values={"rotate": torch.zeros(2)})
    one = DSAParams(ops=("scale",), values={"scale": torch.ones(2, 2)})
    torch.testing.assert_close(ALL.apply(x, zero), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(ALL.apply(x, one), x, rtol=0, atol=1e-5)


def test_rotate_90_about_centre():
    x = images(n=1, h=6, w=6, dtype=torch.float64)
    params = DSAParams(ops=("rotate",), values={"rotate": torch.tensor([90.0])})
    torch.testing.assert_close(ALL.apply(x, params), torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-9)


def test_scale_keeps_centre_pixel():
    x = images(n=1, h=5, w=7)
    params = DSAParams(ops=("scale",), values={"scale": torch.tensor([[1.2, 0.85]])})
    out = ALL.apply(x, params)
    torch.testing.assert_close(out[..., 2, 3], x[..., 2, 3], rtol=0, atol=1e-5)
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("cx,cy", [(4, 3), (0, 0), (9, 7), (10, 8)])
def test_cutout_zeros_exactly_the_square(cx, cy):
    h, w = 8, 10  # square side int(0.5*size+0.5): 4 rows x 5 cols
    x = images(n=1, h=h, w=w) + 10.0  # no accidental zeros
    params = DSAParams(ops=("cutout",), values={"cutout_center": torch.tensor([[cx, cy]])})
    out = ALL.apply(x, params)
    hole = torch.zeros(h, w, dtype=torch.bool)
    hole[max(cy - 2, 0) : cy - 2 + 4, max(cx - 2, 0) : cx - 2 + 5] = True
    assert torch.equal(out[..., hole], torch.zeros_like(out[..., hole]))
    assert torch.equal(out[..., ~hole], x[..., ~hole])


def color_params(brightness, saturation, contrast):
    t = lambda v: torch.tensor(v, dtype=torch.float32)
    return DSAParams(ops=("color",), values={"brightness": t(brightness), "saturation": t(saturation), "contrast": t(contrast)})


def test_brightness_adds_offset():
    x = images(n=2)
    out = ALL.apply(x, color_params([0.3, -0.4], [1.0, 1.0], [1.0, 1.0]))
    torch.testing.assert_close(out, x + torch.tensor([0.3, -0.4]).view(2, 1, 1, 1))


def test_saturation_and_contrast_formulas():
    x = images(n=1)
    out = ALL.apply(x, color_params([0.0], [1.5], [0.7]))
    m = x.mean(dim=1, keepdim=True)
    expect = (x - m) * 1.5 + m
    m = expect.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, (expect - m) * 0.7 + m)


def test_saturation_is_identity_for_one_channel():
    x = images(n=3, c=1)
    out = ALL.apply(x, color_params([0.0] * 3, [0.0, 0.5, 2.0], [1.0] * 3))
    torch.testing.assert_close(out, x)


def test_no_clamping_of_normalised_images():
    x = images(n=2) * 5.0
    out = ALL.apply(x, color_params([0.5, 0.5], [1.0, 1.0], [1.0, 1.0]))
    assert out.max() > 1.0 and out.min() < 0.0


# ---------------------------------------------------------------------------- composition and shapes


def test_all_mode_composes_geometric_ops_in_order():
    """Crop then flip, warped once, equals flip(shift(x)) - not shift(flip(x))."""
    x = images(n=1, dtype=torch.float64)
    params = DSAParams(
        ops=("crop", "flip"), values={"crop_shift": torch.tensor([[2, 1]]), "flip": torch.tensor([True])}
    )
    torch.testing.assert_close(ALL.apply(x, params), shifted(x, 2, 1).flip(-1), rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 1, 6, 6), (1, 3, 5, 9), (7, 3, 12, 8), (2, 1, 9, 4)])
@pytest.mark.parametrize("dsa", [ALL, SINGLE], ids=["all", "single"])
def test_shapes_and_dtypes_preserved(shape, dsa):
    x = torch.randn(*shape)
    out = dsa(x, gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = images(n=5)
    for seed in range(10):
        cpu = ALL(x, gen(seed))
        gpu = ALL(x.cuda(), gen(seed))
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
