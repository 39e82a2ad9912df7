"""The gradient-matching bases as published: IDC's outer/inner loop, DSA/DC's inner network, their counts and recipes."""

from types import SimpleNamespace

import pytest
import torch

from pdd_ray.augment import DSA, DSAConfig
from pdd_ray.config import load_config
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.data.splits import LabeledImages
from pdd_ray.distill.base import SyntheticState
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.gradient_matching import (DSA_LOOPS, IDC_INNER_LOOP, IDC_NITER, PRESETS, GMConfig,
                                               GradientMatcher, idc_net_updates)
from pdd_ray.distill.methods.gradient_matching import pixel_space
from pdd_ray.errors import UserError
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.models import create_model

CLASSES, SIZE = 3, 8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_real(per_class: int = 12, seed: int = 1) -> LabeledImages:
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = torch.randn(len(labels), 1, SIZE, SIZE, generator=gen(seed)) * 0.3
    for c in range(CLASSES):
        images[labels == c, :, 2 * c:2 * c + 3, 2:6] += 1.0
    return LabeledImages(images, labels, CLASSES)


def make_model():
    return create_model("convnet", 1, CLASSES, SIZE, width=4, depth=2)


def tiny_state(ipc: int = 2, seed: int = 2, scale: float = 1.0) -> SyntheticState:
    labels = torch.arange(CLASSES).repeat_interleave(ipc)
    images = torch.randn(len(labels), 1, SIZE, SIZE, generator=gen(seed)) * scale
    return SyntheticState(torch.empty(0, 1, SIZE, SIZE), torch.empty(0, dtype=torch.long),
                          images.requires_grad_(), labels)


def small(**changes) -> GMConfig:
    return GMConfig(batch_real=8, net_batch=8, net_updates=2, **changes)


def run_iterations(m: GradientMatcher, state: SyntheticState, n: int, seed: int = 0) -> None:
    g = gen(seed)
    for it in range(n):
        for item in m.plan(it, g):
            m.contribution(state, item)
        m.after_iteration(state, it, g)


# ---------------------------------------------------------------------------- the outer/inner loop


def test_one_outer_iteration_builds_one_fresh_network_and_runs_its_inner_iterations(monkeypatch):
    """K = net_reset_every matching steps share one network; the network trains between them (K-1 times)."""
    inner = 4
    warmed, trained = [], []
    m = GradientMatcher(small(net_reset_every=inner), tiny_real(), make_model, warmup=warmed.append)
    monkeypatch.setattr(m, "_train_on_real", lambda net, seed: trained.append(net))
    state = tiny_state()
    first = m.net
    assert m.networks_built == 1 and len(warmed) == 1
    g = gen(0)
    for it in range(inner):
        assert len(m.plan(it, g)) == CLASSES  # one matching step = every class
        assert m.net is first
        m.after_iteration(state, it, g)
    assert len(trained) == inner - 1 and all(net is first for net in trained)
    assert m.networks_built == 2 and len(warmed) == 2 and m.net is not first  # the next outer iteration's


def test_official_loop_counts():
    assert (IDC_NITER, IDC_INNER_LOOP) == (2000, 100)  # PDD README --niter 2000, argument.py inner_loop 100
    assert idc_net_updates(500) == 8 and idc_net_updates(2000) == 32  # train_epoch(n_data) at batch 64
    assert DSA_LOOPS[1] == (1, 1) and DSA_LOOPS[10] == (10, 50) and DSA_LOOPS[50] == (50, 10)  # get_loops
    idc = PRESETS["idc"]
    assert (idc.batch_real, idc.batch_syn_max, idc.net_batch, idc.net_cutmix, idc.net_reset_every) == (64, 128, 64,
                                                                                                     0.5, 100)
    assert (idc.net_lr, idc.net_momentum, idc.net_weight_decay) == (0.01, 0.9, 5e-4)
    assert (idc.match_augment, idc.match_mode, idc.match_batch, idc.net_augment) == ("color_crop_cutout", "idc",
                                                                                     True, "color_crop")
    dsa = PRESETS["dsa"]
    assert (dsa.net_data, dsa.net_reset_every, dsa.net_updates, dsa.lr_img, dsa.batch_real) == ("synthetic", 10, 50,
                                                                                                 0.1, 256)
    assert (dsa.net_momentum, dsa.net_weight_decay, dsa.match_batch) == (0.0, 0.0, True)


def test_dsa_inner_network_trains_on_the_synthetic_set():
    """With net_data=synthetic the update depends on the synthetic images, not on the real ones."""
    def trained(real_seed: int, syn_seed: int) -> torch.Tensor:
        m = GradientMatcher(PRESETS["dsa"].replace(batch_real=8, net_reset_every=5, net_updates=3), tiny_real(
            seed=real_seed), make_model, seed=3)
        before = torch.cat([p.detach().flatten().clone() for p in m.net.parameters()])
        m.after_iteration(tiny_state(seed=syn_seed), 0, gen(0))
        after = torch.cat([p.detach().flatten() for p in m.net.parameters()])
        assert not torch.equal(before, after)  # the network did update
        return after
    assert torch.equal(trained(1, 2), trained(5, 2))  # other real data: same network
    assert not torch.allclose(trained(1, 2), trained(1, 7))  # other synthetic images: another network


def test_real_data_variant_of_dsa_is_a_setting():
    """Today's variant (the network trains on real data) stays available as gm.net_data=real."""
    def trained(real_seed: int) -> torch.Tensor:
        m = GradientMatcher(PRESETS["dsa"].replace(batch_real=8, net_batch=8, net_reset_every=5, net_updates=2,
                                                   net_data="real"), tiny_real(seed=real_seed), make_model, seed=3)
        m.after_iteration(tiny_state(), 0, gen(0))
        return torch.cat([p.detach().flatten() for p in m.net.parameters()])
    assert not torch.allclose(trained(1), trained(5))


def test_images_are_clamped_at_the_start_of_each_outer_iteration():
    lo, hi = torch.full((1, 1, 1, 1), -0.8), torch.full((1, 1, 1, 1), 2.0)
    m = GradientMatcher(small(net_reset_every=2), tiny_real(), make_model, bounds=(lo, hi))
    state = tiny_state(scale=10.0)
    g = gen(0)
    m.after_iteration(state, 0, g)  # inside the outer iteration: untouched
    assert state.images.min() < -0.8 and state.images.max() > 2.0
    m.after_iteration(state, 1, g)  # the next outer iteration starts: clamped
    assert state.images.min() >= -0.8 and state.images.max() <= 2.0
    assert (state.images == -0.8).any() and (state.images == 2.0).any()
    off = GradientMatcher(small(net_reset_every=1, clamp=False), tiny_real(), make_model, bounds=(lo, hi))
    state = tiny_state(scale=10.0)
    off.after_iteration(state, 0, gen(0))
    assert state.images.max() > 2.0


def test_batch_syn_max_caps_the_decoded_synthetic_batch(monkeypatch):
    m = GradientMatcher(small(batch_syn_max=5, factor=2), tiny_real(), make_model)  # 2 stored -> 8 decoded per class
    seen = []
    real_forward = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda x: (seen.append(len(x)), real_forward(x))[1])
    m.loss(tiny_state(), m.plan(0, gen(0))[0])
    assert seen == [8, 5]  # real batch_real=8, then at most 5 synthetic


# ---------------------------------------------------------------------------- pixel space


def _fake(mean, std, ipc=10, shape=(1, 28, 28), **gm):
    config = SimpleNamespace(gm=GMConfig(**gm), stages=SimpleNamespace(ipc=ipc))
    data = SimpleNamespace(image_shape=shape, preprocessor=Preprocessor(mean, std))
    return config, data


def test_lr_img_tune_is_idc_tune_lr_img():
    assert GMConfig().lr_img_factor(10, 32, 32) == 1.0
    assert GMConfig().lr_img_factor(10, 28, 28) == pytest.approx((28 / 32) ** 2)  # Fashion-MNIST, base 32
    assert GMConfig().lr_img_factor(2, 28, 28) == pytest.approx(0.2 * (28 / 32) ** 2)
    assert GMConfig(lr_img_tune=False).lr_img_factor(2, 28, 28) == 1.0


def test_pixel_space_lr_is_the_pixel_step_written_in_normalised_space():
    """x_n - lr * scale * dL/dx_n equals normalise(x_p - lr * dL/dx_p) for any loss (per channel)."""
    mean, std = [0.4, 0.5, 0.3], [0.25, 0.2, 0.3]
    config, data = _fake(mean, std, ipc=10, shape=(3, 32, 32), lr_img_tune=False)
    scale, bounds = pixel_space(config, data)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(scale, 1 / s.square())
    torch.testing.assert_close(bounds[0], -m / s)
    torch.testing.assert_close(bounds[1], (1 - m) / s)
    weights = torch.randn(1, 3, 4, 4, generator=gen(0))

    def loss(x_n):
        return (weights * x_n.sin()).sum()
    x_p = torch.rand(2, 3, 4, 4, generator=gen(1), dtype=torch.float64).requires_grad_()
    (g_p,) = torch.autograd.grad(loss((x_p - m) / s), [x_p])
    x_n = ((x_p - m) / s).detach().requires_grad_()
    (g_n,) = torch.autograd.grad(loss(x_n), [x_n])
    lr = 0.01
    torch.testing.assert_close(x_n - lr * scale * g_n, ((x_p - lr * g_p) - m) / s)


def test_pixel_space_with_tuning_and_normalised_space():
    config, data = _fake([0.2861], [0.3530], ipc=10)
    scale, _ = pixel_space(config, data)
    assert float(scale) == pytest.approx((28 / 32) ** 2 / 0.3530 ** 2, rel=1e-6)
    config, data = _fake([0.2861], [0.3530], image_space="normalised", lr_img_tune=False, clamp=False)
    assert pixel_space(config, data) == (None, None)


def test_matcher_scales_the_image_gradient():
    scale = torch.full((1, 1, 1, 1), 3.0)
    a = GradientMatcher(small(), tiny_real(), make_model, seed=4)
    b = GradientMatcher(small(), tiny_real(), make_model, seed=4, grad_scale=scale)
    state = tiny_state()
    item = a.plan(0, gen(0))[0]
    torch.testing.assert_close(b.contribution(state, item).grad_images, 3.0 * a.contribution(state, item).grad_images)


# ---------------------------------------------------------------------------- batch-shared augmentation


@pytest.mark.parametrize("mode,strategy", [("idc", "color_crop_cutout"), ("single", "color_crop_cutout_flip_scale_rotate"),
                                           ("all", "color_crop_cutout_flip_scale_rotate")])
def test_batch_shared_dsa_applies_one_transform_to_every_image_of_both_batches(mode, strategy):
    dsa = DSA(DSAConfig(strategy, mode, batch=True))
    image = torch.randn(1, 3, 12, 12, generator=gen(0))
    real, syn = image.repeat(7, 1, 1, 1), image.repeat(3, 1, 1, 1)
    for seed in range(10):
        out_real, out_syn = dsa.siamese(real, syn, generator=gen(seed))
        assert torch.equal(out_real, out_real[:1].expand_as(out_real))
        assert torch.equal(out_syn, out_real[:3])
    per_sample = DSA(DSAConfig(strategy, mode))
    out, _ = per_sample.siamese(real, syn, generator=gen(0))
    assert not torch.equal(out, out[:1].expand_as(out))  # without batch mode, samples differ


def test_idc_mode_applies_color_flip_one_other_and_cutout_last():
    ops = {DSA(DSAConfig("color_crop_cutout_flip_scale_rotate", "idc")).sample(2, (8, 8), gen(s)).ops
           for s in range(40)}
    assert ops == {("color", "flip", op, "cutout") for op in ("crop", "scale", "rotate")}
    assert DSA(DSAConfig("color_crop_cutout", "idc")).sample(2, (8, 8), gen(0)).ops == ("color", "crop", "cutout")


def test_scale_zooms_by_one_over_s():
    """s = 2 samples the input at 2·(p - centre): the content shrinks (the reference's affine_grid with diag(s))."""
    x = torch.randn(1, 1, 9, 9, generator=gen(0), dtype=torch.float64)
    from pdd_ray.augment import DSAParams
    out = DSA().apply(x, DSAParams(ops=("scale",), values={"scale": torch.tensor([[2.0, 2.0]])}))
    for d in (-2, -1, 1, 2):
        torch.testing.assert_close(out[0, 0, 4 + d, 4 + d], x[0, 0, 4 + 2 * d, 4 + 2 * d], rtol=0, atol=1e-9)
    assert out[0, 0, 0, 0] == 0  # sampled outside the image: zero fill


def test_cutout_runs_after_the_warp():
    """A cutout hole stays a hole after any crop in the same call: cutout is applied last."""
    from pdd_ray.augment import DSAParams
    x = torch.randn(1, 1, 8, 8, generator=gen(0)) + 10.0
    params = DSAParams(ops=("cutout", "crop"), values={"cutout_center": torch.tensor([[4, 4]]),
                                                       "crop_shift": torch.tensor([[2, 0]])})
    out = DSA(DSAConfig("cutout_crop", "all")).apply(x, params)
    assert torch.equal(out[0, 0, 2:6, 2:6], torch.zeros(4, 4))


# ---------------------------------------------------------------------------- method presets and recipes


def test_idc_method_lays_the_idc_evaluation_recipe_under_the_user():
    config = load_config(DistillConfig, None, ["method=idc"])
    e = config.eval
    assert (e.batch_size, e.schedule, e.cutmix, e.lr) == (64, "multistep", 0.5, 0.01)
    assert (config.augment.strategy, config.augment.mode, config.data.zca) == ("color_crop_flip_scale_rotate", "idc",
                                                                               False)
    protocol = EvalProtocol.from_config(e, config.augment)
    assert protocol.cutmix == 0.5 and "cutout" not in protocol.augment.config.strategy
    assert load_config(DistillConfig, None, ["method=idc", "eval.cutmix=0"]).eval.cutmix == 0


def test_dsa_dc_presets_train_their_network_on_synthetic_data():
    for name in ("dsa", "dc"):
        assert load_config(DistillConfig, None, [f"method={name}"]).gm.net_data == "synthetic"


def test_pixel_space_refuses_zca():
    with pytest.raises(UserError, match="zca"):
        load_config(DistillConfig, None, ["method=idc", "data.dataset=cifar10", "data.zca=true"])


def test_idc_warmup_is_progressive_with_a_fresh_optimizer_per_earlier_set(monkeypatch):
    """distill_idc.py: for each earlier interval j, train_only(U_j, epochs / 5) with its own SGD."""
    from pdd_ray.distill.methods.gradient_matching import GradientMatchingMethod
    from pdd_ray.synset import Stage
    calls = []
    monkeypatch.setattr(EvalProtocol, "train", lambda self, net, phases, optimizer=None, **kw: calls.append(
        (self, [len(p.labels) for p in phases], optimizer)))
    config = load_config(DistillConfig, None, ["method=idc", "gm.warmup_epochs=200"])
    earlier = [Stage(torch.randn(4, 1, 8, 8), torch.arange(4), None, {"factor": 2}) for _ in range(3)]
    GradientMatchingMethod._warmup(config, earlier)(make_model())
    assert [sizes for _, sizes, _ in calls] == [[16], [32], [48]]  # U_1, U_2, U_3 decoded (factor 2)
    assert all(opt is None for _, _, opt in calls)  # a fresh optimizer each time
    protocol = calls[0][0]
    assert (protocol.epochs, protocol.schedule, protocol.batch_size, protocol.cutmix) == (200, "multistep", 64, 0.5)
