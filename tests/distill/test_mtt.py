"""MTT matcher: meta-gradients against finite differences, memory-saving == standard, conditioning, planning."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pdd_ray.augment.dsa import DSA
from pdd_ray.distill.base import SyntheticState
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher, MTTWorkItem, batch_schedule
from pdd_ray.errors import UserError
from pdd_ray.models import ParamLayout, create_model
from pdd_ray.models.functional import FlatForward, flatten_params
from pdd_ray.trajectories import TrajectoryStore

CLASSES, SIZE = 3, 8


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnet", 1, CLASSES, SIZE, width=4, depth=2)


def make_store(path, model, experts=2, snapshots=5) -> TrajectoryStore:
    """Random-walk trajectories from the model's init: each epoch moves every parameter a little."""
    layout = ParamLayout.of(model)
    store = TrajectoryStore.create(path, dataset="synthetic", preprocessing={}, model={"arch": "convnet"},
                                   layout=layout, recipe={}, num_snapshots=snapshots)
    gen = torch.Generator().manual_seed(1)
    start = flatten_params(model)
    for e in range(experts):
        steps = 0.05 * torch.randn(snapshots - 1, layout.numel, generator=gen)
        store.write_expert(e, torch.cat([start[None], start + steps.cumsum(0)]), {})
    return store


def make_state(dtype=torch.float64, frozen=3, live=6, lr=0.1) -> SyntheticState:
    gen = torch.Generator().manual_seed(2)
    return SyntheticState(
        frozen_images=torch.randn(frozen, 1, SIZE, SIZE, generator=gen, dtype=dtype),
        frozen_labels=torch.arange(frozen) % CLASSES,
        images=torch.randn(live, 1, SIZE, SIZE, generator=gen, dtype=dtype).requires_grad_(True),
        labels=torch.arange(live) % CLASSES,
        lr=torch.tensor(lr, dtype=dtype).requires_grad_(True),
    )


def make_matcher(tmp_path, augment=True, **overrides) -> MTTMatcher:
    model = tiny_model()
    config = MTTConfig(**{"syn_steps": 4, "expert_epochs": 2, "max_start_epoch": 2, "batch_syn": 4, **overrides})
    return MTTMatcher(config, make_store(tmp_path / "store", model), FlatForward(model),
                      DSA() if augment else None)


ITEM = MTTWorkItem(expert=1, start_epoch=1, seed=1234)



def loss_at(matcher, state, images=None, lr=None) -> float:
    probe = dataclasses.replace(state, images=state.images if images is None else images,
                                lr=state.lr if lr is None else lr)
    return matcher.contribution(probe, ITEM).loss


@pytest.mark.parametrize("augment", [False, True])
def test_meta_gradient_matches_finite_differences(tmp_path, augment):
    matcher = make_matcher(tmp_path, augment=augment)
    state = make_state()
    c = matcher.contribution(state, ITEM)
    eps = 1e-6
    # Directional derivative of the loss along a random image direction.
    v = torch.randn(state.images.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = state.images.detach()
    numeric = (loss_at(matcher, state, images=x + eps * v) - loss_at(matcher, state, images=x - eps * v)) / (2 * eps)
    assert (c.grad_images * v).sum().item() == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    assert c.grad_images.abs().sum() > 0
    lr = state.lr.detach()
    numeric_lr = (loss_at(matcher, state, lr=lr + eps) - loss_at(matcher, state, lr=lr - eps)) / (2 * eps)
    assert c.grad_lr.item() == pytest.approx(numeric_lr, rel=1e-5, abs=1e-10)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_memory_saving_equals_standard(tmp_path, dtype, rtol):
    # DSA on and batch_syn (4) < union size (9): the replayed batches and augmentations must match exactly.
    standard = make_matcher(tmp_path / "a", syn_steps=6)
    saving = make_matcher(tmp_path / "b", syn_steps=6, memory_saving=True)
    state = make_state(dtype)
    a, b = standard.contribution(state, ITEM), saving.contribution(state, ITEM)
    assert b.loss == pytest.approx(a.loss, rel=rtol)
    scale = a.grad_images.abs().max()
    torch.testing.assert_close(b.grad_images, a.grad_images, rtol=rtol, atol=rtol * scale)
    torch.testing.assert_close(b.grad_lr, a.grad_lr, rtol=rtol, atol=0.0)
    assert b.grad_images.dtype == dtype and b.grad_images.shape == state.images.shape


def test_state_is_not_mutated(tmp_path):
    matcher = make_matcher(tmp_path, memory_saving=True)
    state = make_state()
    before = state.images.detach().clone()
    matcher.contribution(state, ITEM)
    assert state.images.grad is None and state.lr.grad is None
    assert torch.equal(state.images.detach(), before)


def test_frozen_images_are_sampled_but_get_no_gradient(tmp_path):
    matcher = make_matcher(tmp_path, batch_syn=0)  # whole union each step: every frozen image is used
    state = make_state()
    state.frozen_images.requires_grad_(True)  # even a caller's leaf must not receive gradient
    c = matcher.contribution(state, ITEM)
    assert c.grad_images.shape == state.images.shape
    assert state.frozen_images.grad is None
    changed = dataclasses.replace(state, frozen_images=state.frozen_images.detach() + 1.0)
    assert matcher.contribution(changed, ITEM).loss != c.loss


def test_loss_is_one_when_lr_is_zero(tmp_path):
    for memory_saving in (False, True):
        matcher = make_matcher(tmp_path / str(memory_saving), memory_saving=memory_saving)
        c = matcher.contribution(make_state(lr=0.0), ITEM)
        assert c.loss == 1.0


def test_loss_is_shared_between_trajectories(tmp_path):
    one = make_matcher(tmp_path / "one").contribution(make_state(), ITEM)
    two = make_matcher(tmp_path / "two", trajectories_per_iteration=2).contribution(make_state(), ITEM)
    assert two.loss == pytest.approx(one.loss / 2)
    torch.testing.assert_close(two.grad_images, one.grad_images / 2)


def test_without_learnable_lr_uses_lr_teacher(tmp_path):
    matcher = make_matcher(tmp_path, lr_teacher=0.1)
    state = make_state(lr=0.1)
    c = matcher.contribution(dataclasses.replace(state, lr=None), ITEM)
    assert c.grad_lr is None
    assert c.loss == pytest.approx(matcher.contribution(state, ITEM).loss)


def test_plan_is_seeded_and_respects_max_start_epoch(tmp_path):
    matcher = make_matcher(tmp_path, trajectories_per_iteration=50, max_start_epoch=2)
    a = matcher.plan(0, torch.Generator().manual_seed(7))
    assert a == matcher.plan(0, torch.Generator().manual_seed(7))
    assert a != matcher.plan(0, torch.Generator().manual_seed(8))
    assert len(a) == 50
    assert {i.start_epoch for i in a} == {0, 1}  # 0..max_start_epoch-1: the top is excluded
    assert {i.expert for i in a} == {0, 1}
    assert len({i.seed for i in a}) == 50


def test_batch_schedule_reshuffles_when_the_union_is_used_up():
    schedule = batch_schedule(union_size=9, steps=6, batch=4, seed=0)
    assert [len(b) for b in schedule] == [4, 4, 1, 4, 4, 1]
    assert sorted(torch.cat(schedule[:3]).tolist()) == list(range(9))
    assert torch.equal(torch.cat(batch_schedule(9, 6, 4, 0)), torch.cat(schedule))
    assert [len(b) for b in batch_schedule(9, 2, None, 0)] == [9, 9]
    assert [len(b) for b in batch_schedule(9, 2, 0, 0)] == [9, 9]


def test_constructor_errors(tmp_path):
    model = tiny_model()
    empty = TrajectoryStore.create(tmp_path / "empty", dataset="synthetic", preprocessing={}, model={},
                                   layout=ParamLayout.of(model), recipe={}, num_snapshots=5)
    with pytest.raises(UserError, match="no complete experts"):
        MTTMatcher(MTTConfig(max_start_epoch=1), empty, FlatForward(model))
    store = make_store(tmp_path / "store", model, snapshots=5)
    with pytest.raises(UserError, match="needs 6 snapshots"):
        MTTMatcher(MTTConfig(max_start_epoch=3, expert_epochs=2), store, FlatForward(model))
    MTTMatcher(MTTConfig(max_start_epoch=2, expert_epochs=2), store, FlatForward(model))  # exactly enough
    other = create_model("convnet", 1, CLASSES, SIZE, width=5, depth=2)
    with pytest.raises(UserError, match="layout"):
        MTTMatcher(MTTConfig(max_start_epoch=1), store, FlatForward(other))
    for bad in ({"syn_steps": 0}, {"lr_lr": 0.0}, {"max_start_epoch": 0}, {"max_start_epoch": -1}, {"batch_syn": -1}):
        with pytest.raises(UserError):
            MTTMatcher(MTTConfig(**bad), store, FlatForward(model))
