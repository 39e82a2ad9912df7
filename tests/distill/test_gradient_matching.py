"""Tests for gradient matching (DC / DSA / IDC) in pdd_ray.distill.gradient_matching."""

import dataclasses

import pytest
import torch

from pdd_ray.augment import DSA, DSAConfig
from pdd_ray.data.splits import LabeledImages
from pdd_ray.distill.base import SyntheticState, combine
from pdd_ray.distill.gradient_matching import (PRESETS, GMConfig, GMWorkItem, GradientMatcher, gradient_distance,
                                               layer_distance, matched_parameters)
from pdd_ray.errors import UserError
from pdd_ray.models import create_model

CLASSES, SIZE = 3, 8



def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_real(per_class: int = 12, dtype=torch.float32) -> LabeledImages:
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = torch.randn(len(labels), 1, SIZE, SIZE, generator=gen(1), dtype=dtype) * 0.3
    for c in range(CLASSES):  # a class-specific bright block
        images[labels == c, :, 2 * c:2 * c + 3, 2:6] += 1.0
    return LabeledImages(images, labels, CLASSES)


def make_model(dtype=torch.float32):
    return lambda: create_model("convnet", 1, CLASSES, SIZE, width=4, depth=2).to(dtype)


def tiny_state(ipc: int = 2, frozen_ipc: int = 0, dtype=torch.float32, seed: int = 2) -> SyntheticState:
    g = gen(seed)
    labels = torch.arange(CLASSES).repeat_interleave(ipc)
    frozen_labels = torch.arange(CLASSES).repeat_interleave(frozen_ipc)
    return SyntheticState(frozen_images=torch.randn(len(frozen_labels), 1, SIZE, SIZE, generator=g, dtype=dtype),
                          frozen_labels=frozen_labels,
                          images=torch.randn(len(labels), 1, SIZE, SIZE, generator=g, dtype=dtype).requires_grad_(),
                          labels=labels)


def matcher(dtype=torch.float32, real=None, **changes) -> GradientMatcher:
    cfg = GMConfig(batch_real=8, net_updates=2, net_batch=16, net_reset_every=3).replace(**changes)
    return GradientMatcher(cfg, real or tiny_real(dtype=dtype), make_model(dtype))


# ---------------------------------------------------------------------------- config


def test_defaults_and_presets_validate():
    GMConfig().validate()
    for cfg in PRESETS.values():
        cfg.validate()
    assert PRESETS["dc"].distance == "dc" and PRESETS["dc"].factor == 1 and PRESETS["dc"].layers == "all"
    assert PRESETS["dsa"].distance == "dc" and PRESETS["dsa"].factor == 1 and PRESETS["dsa"].layers == "all"
    assert PRESETS["idc"].factor == 2 and PRESETS["idc"].layers == "conv"


@pytest.mark.parametrize("change", [{"distance": "cos"}, {"layers": "fc"}, {"factor": 0}, {"batch_real": 0},
                                    {"net_updates": -1}, {"net_batch": 0}, {"net_reset_every": -2},
                                    {"net_lr": 0.0}, {"lr_img": -1.0}, {"factor": 1.5}])
def test_bad_config_is_a_user_error(change):
    with pytest.raises(UserError):
        dataclasses.replace(GMConfig(), **change).validate()
    with pytest.raises(UserError):
        GradientMatcher(dataclasses.replace(GMConfig(), **change), tiny_real(), make_model())


# ---------------------------------------------------------------------------- distances


def test_dc_distance_zero_for_identical_positive_otherwise():
    g = torch.randn(4, 3, 3, 3, generator=gen(0))
    assert layer_distance(g, g.clone(), "dc").abs() < 1e-5
    assert layer_distance(2.5 * g, g, "dc").abs() < 1e-5  # cosine: scale-free
    other = torch.randn(4, 3, 3, 3, generator=gen(1))
    assert layer_distance(other, g, "dc") > 0.1
    # opposite gradients: 1 - (-1) = 2 per output unit
    torch.testing.assert_close(layer_distance(-g, g, "dc"), torch.tensor(8.0), atol=1e-4, rtol=0)


def test_dc_distance_per_output_unit_and_ignores_biases():
    s, r = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(layer_distance(s, r, "dc"), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert layer_distance(torch.randn(5), torch.randn(5), "dc") == 0


def test_mse_and_l1_distances():
    s, r = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.0, 1.0], [0.5, 1.0]])
    torch.testing.assert_close(layer_distance(s, r, "mse"), torch.tensor(1.0 + 9.0 + 0.0 + 4.0))
    torch.testing.assert_close(layer_distance(s, r, "l1"), torch.tensor(1.0 + 3.0 + 0.0 + 2.0))
    bias_s, bias_r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    torch.testing.assert_close(gradient_distance([s, bias_s], [r, bias_r], "mse"), torch.tensor(14.0 + 5.0))
    with pytest.raises(ValueError):
        layer_distance(s, r, "cos")


def test_matched_parameters():
    net = make_model()()
    conv = matched_parameters(net, "conv")
    assert len(conv) == 2 and all(p.dim() == 4 for p in conv)
    assert len(matched_parameters(net, "all")) == len(list(net.parameters()))


# ---------------------------------------------------------------------------- plan / contribution


def test_plan_one_item_per_class_seeded():
    m = matcher()
    items = m.plan(0, gen(5))
    assert [i.label for i in items] == list(range(CLASSES))
    assert items == m.plan(0, gen(5))
    assert items != m.plan(0, gen(6))


@pytest.mark.parametrize("factor", [1, 2])
def test_gradient_only_on_rows_of_the_class(factor):
    m, state = matcher(factor=factor), tiny_state(frozen_ipc=1)
    before = state.images.detach().clone()
    for item in m.plan(0, gen(0)):
        contrib = m.contribution(state, item)
        rows = state.labels == item.label
        assert contrib.grad_images.shape == state.images.shape
        assert contrib.finite and contrib.loss > 0 and contrib.grad_lr is None
        assert (contrib.grad_images[~rows] == 0).all()
        assert (contrib.grad_images[rows].abs().sum((1, 2, 3)) > 0).all()
    assert state.images.grad is None and torch.equal(state.images.detach(), before)
    assert all(p.grad is None for p in m.net.parameters())


def test_frozen_images_get_no_gradient_but_change_the_loss():
    m = matcher()
    with_frozen = tiny_state(frozen_ipc=2)
    with_frozen.frozen_images.requires_grad_()  # even a differentiable frozen tensor must stay untouched
    without = SyntheticState(with_frozen.frozen_images[:0].detach(), with_frozen.frozen_labels[:0],
                             with_frozen.images, with_frozen.labels)
    item = GMWorkItem(label=1, seed=3)
    a, b = m.contribution(with_frozen, item), m.contribution(without, item)
    assert a.loss != pytest.approx(b.loss)
    assert not torch.allclose(a.grad_images, b.grad_images)
    assert with_frozen.frozen_images.grad is None
    # only the live images are leaves of the loss
    assert torch.autograd.grad(m.loss(with_frozen, item), [with_frozen.frozen_images], allow_unused=True)[0] is None


def test_sum_over_items_equals_gradient_of_summed_loss():
    m, state = matcher(factor=2), tiny_state(ipc=2, frozen_ipc=1)
    items = m.plan(0, gen(4))
    total = combine([m.contribution(state, item) for item in items])
    summed = sum(m.loss(state, item) for item in items)
    (grad,) = torch.autograd.grad(summed, [state.images])
    torch.testing.assert_close(total.grad_images, grad)
    assert total.loss == pytest.approx(summed.item())


def test_same_seeds_same_result_other_seed_differs():
    state = tiny_state()
    a, b = matcher(), matcher()
    item = GMWorkItem(label=0, seed=11)
    ca, cb = a.contribution(state, item), b.contribution(state, item)
    assert ca.loss == cb.loss and torch.equal(ca.grad_images, cb.grad_images)
    cc = a.contribution(state, GMWorkItem(label=0, seed=12))
    assert cc.loss != ca.loss


def test_global_rng_is_not_disturbed():
    rng = torch.get_rng_state()
    m, state = matcher(), tiny_state()
    for item in m.plan(0, gen(0)):
        m.contribution(state, item)
    m.after_iteration(state, 0, gen(1))
    assert torch.equal(torch.get_rng_state(), rng)


def test_dsa_is_siamese_and_seeded():
    real, state = tiny_real(), tiny_state()
    cfg = PRESETS["dsa"].replace(batch_real=8)
    dsa = DSA(DSAConfig(mode="all"))
    m1 = GradientMatcher(cfg, real, make_model(), augment=dsa)
    m2 = GradientMatcher(cfg, real, make_model(), augment=dsa)
    plain = GradientMatcher(cfg, real, make_model())
    item = GMWorkItem(label=2, seed=7)
    c1, c2 = m1.contribution(state, item), m2.contribution(state, item)
    assert torch.equal(c1.grad_images, c2.grad_images)
    assert (c1.grad_images[state.labels != 2] == 0).all() and c1.finite
    assert c1.loss != plain.contribution(state, item).loss  # the augmentation is applied


def test_empty_class_gives_zero_contribution():
    state = tiny_state()
    real = tiny_real()
    keep = real.labels != 1
    m = GradientMatcher(GMConfig(batch_real=8), LabeledImages(real.images[keep], real.labels[keep], CLASSES),
                        make_model())
    contrib = m.contribution(state, GMWorkItem(label=1, seed=0))
    assert contrib.loss == 0 and (contrib.grad_images == 0).all()


@pytest.mark.parametrize("distance,layers,factor", [("mse", "conv", 2), ("dc", "all", 1), ("l1", "conv", 1)])
def test_grad_images_matches_finite_differences(distance, layers, factor):
    dtype = torch.float64
    m = matcher(dtype=dtype, distance=distance, layers=layers, factor=factor)
    state = tiny_state(dtype=dtype, frozen_ipc=1)
    item = GMWorkItem(label=1, seed=5)
    grad = m.contribution(state, item).grad_images
    row = int(torch.nonzero(state.labels == 1)[0])
    for pixel in [(row, 0, 3, 4), (row, 0, 0, 7)]:
        eps = 1e-6
        losses = []
        for sign in (1, -1):
            shifted = state.images.detach().clone()
            shifted[pixel] += sign * eps
            s = SyntheticState(state.frozen_images, state.frozen_labels, shifted.requires_grad_(), state.labels)
            losses.append(m.contribution(s, item).loss)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert grad[pixel].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8)


# ---------------------------------------------------------------------------- the matching network


def params_of(m: GradientMatcher) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.net.parameters()])


def test_after_iteration_trains_the_network():
    m, state = matcher(net_reset_every=0), tiny_state()
    before = params_of(m)
    m.after_iteration(state, 0, gen(0))
    assert not torch.equal(before, params_of(m))
    # reproducible: the same generator gives the same network
    other = matcher(net_reset_every=0)
    other.after_iteration(state, 0, gen(0))
    assert torch.equal(params_of(m), params_of(other))


def test_reset_every_n_iterations_calls_warmup():
    calls = []

    def warmup(net):
        calls.append(net)
        with torch.no_grad():  # global RNG here is seeded by the matcher: reproducible
            net.classifier.bias.add_(torch.randn_like(net.classifier.bias))

    real, state = tiny_real(), tiny_state()
    cfg = GMConfig(batch_real=8, net_updates=1, net_batch=8, net_reset_every=3)
    m = GradientMatcher(cfg, real, make_model(), warmup=warmup)
    assert calls == []  # lazy: nothing built yet
    first = m.net
    assert calls == [first]
    g = gen(0)
    for it in range(2):
        m.after_iteration(state, it, g)
    assert len(calls) == 1 and m.net is first
    m.after_iteration(state, 2, g)
    assert len(calls) == 2 and m.net is calls[-1] and m.net is not first
    for it in range(3, 6):
        m.after_iteration(state, it, g)
    assert len(calls) == 3
    # same seeds -> same fresh (and warmed-up) network
    m2 = GradientMatcher(cfg, real, make_model(), warmup=warmup)
    g2 = gen(0)
    for it in range(6):
        m2.after_iteration(state, it, g2)
    assert torch.equal(params_of(m), params_of(m2))


def test_net_state_round_trip_restores_identical_contributions(tmp_path):
    from safetensors.torch import load_file, save_file

    real, state = tiny_real(), tiny_state(frozen_ipc=1)
    cfg = GMConfig(batch_real=8, net_updates=2, net_batch=16, net_reset_every=4)
    a = GradientMatcher(cfg, real, make_model())
    g = gen(9)
    for it in range(2):
        a.after_iteration(state, it, g)
    saved = a.net_state()
    assert "since_reset" in saved and any(k.startswith("opt.") for k in saved)
    save_file(saved, str(tmp_path / "m.safetensors"))  # what the stage checkpoint does with it

    warmups = []
    b = GradientMatcher(cfg, real, make_model(), warmup=warmups.append)
    b.load_state_tensors(load_file(str(tmp_path / "m.safetensors")))
    assert warmups == []
    item = GMWorkItem(label=0, seed=1)
    ca, cb = a.contribution(state, item), b.contribution(state, item)
    assert ca.loss == cb.loss and torch.equal(ca.grad_images, cb.grad_images)
    # continuing (optimiser momentum, reset counter) stays identical too
    g_b = torch.Generator()
    g_b.set_state(g.get_state())
    for it in range(2, 6):
        a.after_iteration(state, it, g)
        b.after_iteration(state, it, g_b)
    assert torch.equal(params_of(a), params_of(b))


def test_sgd_on_images_reduces_the_matching_loss():
    # batch_real >= class size: every class's real batch is the whole class, so the loss is a fixed function.
    real, state = tiny_real(per_class=12), tiny_state(ipc=2, frozen_ipc=1)
    m = GradientMatcher(GMConfig(batch_real=64, factor=2, distance="mse", net_reset_every=0), real, make_model())
    items = m.plan(0, gen(0))

    def loss_and_grad():
        total = combine([m.contribution(state, item) for item in items])
        return total.loss, total.grad_images

    start, _ = loss_and_grad()
    opt = torch.optim.SGD([state.images], lr=1.0, momentum=0.5)
    for _ in range(10):
        _, grad = loss_and_grad()
        state.images.grad = grad
        opt.step()
        state.images.grad = None
    end, _ = loss_and_grad()
    assert end < 0.7 * start
