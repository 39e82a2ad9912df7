"""MTT's student minibatches gather frozen and live rows separately: same numbers as indexing the built union."""

from __future__ import annotations

import pytest
import torch

import pdd_ray.distill.mtt as mtt
from pdd_ray.distill.mtt import gather_union
from tests.distill.test_mtt import ITEM, make_matcher, make_state


def _concatenated(frozen, live, index):
    """Today's reference: build the union, then index it."""
    return torch.cat([frozen, live])[index]


@pytest.mark.parametrize("index", [[0, 1, 2], [5, 3, 7], [4, 0, 8, 2, 3], [1]])
def test_gather_union_equals_indexing_the_concatenated_union(index):
    frozen = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    live = torch.randn(6, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor(index)
    weights = torch.randn(len(index), 2, 4, 4, dtype=torch.float64)
    ours, reference = gather_union(frozen, live, index), _concatenated(frozen, live, index)
    assert torch.equal(ours, reference)
    assert torch.equal(_live_grad(ours, weights, live), _live_grad(reference, weights, live))


def _live_grad(rows, weights, live):
    if not rows.requires_grad:  # only frozen rows were gathered
        return torch.zeros_like(live)
    (g,) = torch.autograd.grad((rows * weights).sum(), live, allow_unused=True)
    return torch.zeros_like(live) if g is None else g  # None: no live row in the minibatch


def test_gather_union_with_no_frozen_rows():
    live = torch.randn(4, 1, 2, 2)
    assert torch.equal(gather_union(live[:0], live, torch.tensor([3, 1])), live[[3, 1]])


@pytest.mark.parametrize("memory_saving", [False, True])
def test_contribution_equals_the_union_building_unroll(tmp_path, monkeypatch, memory_saving):
    """Loss and gradients identical (1e-6) to the unroll that concatenated the union at every step."""
    state = make_state(frozen=5, live=6)
    matcher = make_matcher(tmp_path, memory_saving=memory_saving, batch_syn=4)
    ours = matcher.contribution(state, ITEM)
    monkeypatch.setattr(mtt, "gather_union", _concatenated)
    reference = matcher.contribution(state, ITEM)
    assert ours.loss == pytest.approx(reference.loss, abs=1e-6)
    assert torch.allclose(ours.grad_images, reference.grad_images, atol=1e-6, rtol=0)
    assert torch.allclose(ours.grad_lr, reference.grad_lr, atol=1e-6, rtol=0)
