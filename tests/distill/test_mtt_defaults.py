"""MTT defaults that follow the reference distill_mtt.py.

* batch_syn None -> num_classes * ipc (the live images of the stage), while the
  minibatches are chunks of a permutation of the whole union (frozen + live),
  re-drawn when the chunks run out; batch_syn 0 keeps the whole-union batch.
* start epoch ~ numpy randint(0, max_start_epoch): max_start_epoch itself is never drawn.
"""

from __future__ import annotations

import torch

from pdd_ray.distill.mtt import MTTConfig, MTTMatcher, MTTWorkItem
from pdd_ray.models.functional import FlatForward
from tests.distill.test_mtt import CLASSES, make_matcher, make_state, make_store, tiny_model

FROZEN, LIVE = 12, 6  # stage 3 of ipc 2 with 3 classes: union 18, live = classes * ipc = 6


class Recorder:
    """A FlatForward that remembers the size and contents of every student minibatch."""

    def __init__(self, forward: FlatForward):
        self.inner, self.layout, self.module = forward, forward.layout, forward.module
        self.batches: list[torch.Tensor] = []

    def __call__(self, x, flat):
        self.batches.append(x.detach().clone())
        return self.inner(x, flat)


def recording_matcher(tmp_path, **overrides):
    model = tiny_model()
    config = MTTConfig(**{"syn_steps": 9, "expert_epochs": 2, "max_start_epoch": 2, **overrides})
    forward = Recorder(FlatForward(model))
    return MTTMatcher(config, make_store(tmp_path / "store", model), forward, None), forward


def test_batch_syn_default_is_classes_times_ipc():
    assert MTTConfig().batch_syn is None
    assert MTTConfig().student_batch(live=LIVE, union=FROZEN + LIVE) == LIVE == CLASSES * 2
    assert MTTConfig(batch_syn=0).student_batch(live=LIVE, union=FROZEN + LIVE) == FROZEN + LIVE
    assert MTTConfig(batch_syn=4).student_batch(live=LIVE, union=FROZEN + LIVE) == 4
    assert MTTConfig(batch_syn=100).student_batch(live=LIVE, union=FROZEN + LIVE) == FROZEN + LIVE


def test_default_minibatches_are_live_sized_and_cover_the_whole_union(tmp_path):
    matcher, rec = recording_matcher(tmp_path)
    state = make_state(frozen=FROZEN, live=LIVE)
    matcher.contribution(state, MTTWorkItem(expert=0, start_epoch=1, seed=5))
    assert [len(b) for b in rec.batches] == [LIVE] * 9  # not the union of 18
    union, _ = state.union()
    flat_union = union.detach().flatten(1)
    # every 3 steps are one permutation of the union: frozen images are sampled, each exactly once per pass
    for p in range(3):
        seen = torch.cat(rec.batches[3 * p:3 * p + 3]).flatten(1)
        match = (seen[:, None, :] == flat_union[None, :, :]).all(-1)  # [18 drawn, 18 union]
        assert match.sum(0).tolist() == [1] * (FROZEN + LIVE)
    frozen_hits = (torch.cat(rec.batches).flatten(1)[:, None, :] == flat_union[None, :FROZEN]).all(-1).any(0)
    assert frozen_hits.all()


def test_batch_syn_zero_keeps_the_whole_union_every_step(tmp_path):
    matcher, rec = recording_matcher(tmp_path, batch_syn=0, syn_steps=3)
    matcher.contribution(make_state(frozen=FROZEN, live=LIVE), MTTWorkItem(expert=0, start_epoch=1, seed=5))
    assert [len(b) for b in rec.batches] == [FROZEN + LIVE] * 3


def test_default_batch_and_memory_saving_agree(tmp_path):
    state = make_state(frozen=FROZEN, live=LIVE)
    item = MTTWorkItem(expert=1, start_epoch=0, seed=11)
    a = make_matcher(tmp_path / "a", batch_syn=None, syn_steps=5).contribution(state, item)
    b = make_matcher(tmp_path / "b", batch_syn=None, syn_steps=5, memory_saving=True).contribution(state, item)
    assert abs(a.loss - b.loss) <= 1e-8 * max(1.0, abs(a.loss))
    torch.testing.assert_close(b.grad_images, a.grad_images, rtol=1e-6, atol=1e-9)


def test_start_epoch_range_excludes_max_start_epoch(tmp_path):
    matcher = make_matcher(tmp_path, trajectories_per_iteration=400, max_start_epoch=3, expert_epochs=1)
    starts = [i.start_epoch for i in matcher.plan(0, torch.Generator().manual_seed(0))]
    assert set(starts) == {0, 1, 2}  # both ends reached, 3 never
    one = make_matcher(tmp_path / "one", trajectories_per_iteration=50, max_start_epoch=1)
    assert {i.start_epoch for i in one.plan(0, torch.Generator().manual_seed(1))} == {0}
