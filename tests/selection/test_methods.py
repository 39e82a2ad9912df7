import pytest
import torch

from pdd_ray.models import create_model
from pdd_ray.selection import SELECTORS, SelectionContext, select
from pdd_ray.selection.methods import herding_order, k_center_order


def _context(seed=0, epochs=3):
    return SelectionContext(make_model=lambda: create_model("convnet", 1, 4, 8, width=4, depth=2),
                            epochs=epochs, lr=0.05, batch_size=16, seed=seed)


@pytest.mark.parametrize("method", ["random", "herding", "k-center", "forgetting"])
def test_each_method_picks_ipc_distinct_examples_per_class(method, tiny_separable):
    idx = select(method, tiny_separable, 3, _context())
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    assert torch.bincount(tiny_separable.labels[idx], minlength=4).tolist() == [3, 3, 3, 3]


def test_random_is_seeded(tiny_labeled):
    a = select("random", tiny_labeled, 2, _context(seed=1))
    assert torch.equal(a, select("random", tiny_labeled, 2, _context(seed=1)))
    assert not torch.equal(a, select("random", tiny_labeled, 2, _context(seed=2)))


def test_herding_first_pick_is_nearest_to_mean_and_tracks_mean():
    feats = torch.tensor([[0.0, 0.0], [10.0, 0.0], [-10.0, 0.0], [1.0, 1.0]])
    order = herding_order(feats, 3)
    # target mean (0.25, 0.25): (0,0) is nearest; then (1,1) keeps the running mean at (0.5,0.5);
    # then (-10,0) gives mean (-3, 1/3), nearer the target than (11/3, 1/3)
    assert order.tolist() == [0, 3, 2]


def test_k_center_spreads_out():
    feats = torch.tensor([[0.0], [0.1], [0.2], [5.0], [-5.0]])
    order = k_center_order(feats, 3).tolist()
    assert order[0] == 1 and set(order[1:]) == {3, 4}  # mean 0.06 -> 0.1 first


def test_forgetting_prefers_most_forgotten(monkeypatch, tiny_labeled):
    ctx = _context()
    scores = torch.zeros(40)
    scores[[3, 7, 12, 18, 25, 31]] = torch.tensor([5.0, float("inf"), 2.0, 4.0, 1.0, 9.0])
    ctx._trained = (None, scores)
    idx = select("forgetting", tiny_labeled, 1, ctx).tolist()
    assert idx[0] == 7 and idx[1] == 18 and idx[2] == 25 and idx[3] == 31


def test_scorer_is_trained_once(tiny_separable):
    ctx = _context()
    a = ctx.scorer(tiny_separable)
    assert ctx.scorer(tiny_separable) is a
    assert SELECTORS.names() == ["forgetting", "herding", "k-center", "random"]
