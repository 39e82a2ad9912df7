"""Two gloo workers make the same synthetic-set update as one process doing the same total work.

Each case runs a few iterations of the real stage loop (``distill_stage``) twice: once
in this process (``LocalComm``), once on a 2-process torch.distributed group where each
worker computes only its share (trajectories, classes, or minibatch slices) and the
gradients are all-reduced. The images and the learned lr must agree to 1e-5 relative.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdd_ray.augment.dsa import DSA
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher
from pdd_ray.distill.stage import StageSettings, distill_stage
from pdd_ray.errors import UserError
from pdd_ray.models.functional import FlatForward
from pdd_ray.parallel import LocalComm, all_reduce_contribution
from pdd_ray.parallel.local import run_process_group
from pdd_ray.trajectories import TrajectoryStore
from tests.distill import test_gradient_matching as gm_helpers
from tests.distill import test_mtt as mtt_helpers

ITERATIONS = 3


def _run(comm, matcher, state, checkpoint: Path, resume_from: Path | None = None) -> dict:
    settings = StageSettings(iterations=ITERATIONS, lr_img=50.0, lr_lr=1e-3 if state.lr is not None else None,
                             eval_every=2, checkpoint_every=2, seed=3)
    seen = []
    outcome = distill_stage(state, matcher, settings, validate=lambda images, lr: float(images.mean()),
                            checkpoint_path=checkpoint, progress=False, comm=comm, resume_from=resume_from,
                            on_validation=lambda it, acc: seen.append(acc))
    return {"images": state.images.detach(), "lr": None if state.lr is None else state.lr.detach(),
            "best_iteration": outcome.best_iteration, "validations": seen}


def mtt_case(comm, store_dir: str, split: str, trajectories: int, checkpoint: str) -> dict:
    """A tiny MTT stage: 2 trajectories split over workers, or 1 trajectory with sharded minibatches."""
    model = mtt_helpers.tiny_model()
    config = MTTConfig(syn_steps=4, expert_epochs=2, max_start_epoch=2, batch_syn=6,
                       trajectories_per_iteration=trajectories, memory_saving=split == "batch")
    matcher = MTTMatcher(config, TrajectoryStore.open(store_dir, layout=None), FlatForward(model), DSA(),
                         comm=comm, shard_batch=split == "batch")
    return _run(comm, matcher, mtt_helpers.make_state(dtype=torch.float32), Path(checkpoint))


def gm_case(comm, checkpoint: str, resume_from: dict | None = None) -> dict:
    """A tiny IDC-style gradient-matching stage: the 3 classes are dealt over the workers."""
    matcher = gm_helpers.matcher(factor=2, distance="mse", layers="conv")
    matcher.comm = comm  # the real-data training of the matching network is split too
    resume = None if resume_from is None else Path(resume_from[comm.rank])
    return _run(comm, matcher, gm_helpers.tiny_state(ipc=2, frozen_ipc=1), Path(checkpoint), resume)


def _relative(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def _assert_same_update(single: dict, workers: list[dict]) -> None:
    for rank, result in enumerate(workers):
        moved = _relative(single["images"], single["start"])
        assert moved > 1e-3, "the stage must actually change the images for the comparison to mean anything"
        assert _relative(result["images"], single["images"]) <= 1e-5, f"rank {rank} images differ"
        if single["lr"] is not None:
            assert _relative(result["lr"], single["lr"]) <= 1e-5, f"rank {rank} lr differs"
        # rank 0's validation number is broadcast: every worker saw the same checks and picked the same best
        assert result["validations"] == pytest.approx(single["validations"], rel=1e-5)
        assert result["best_iteration"] == single["best_iteration"]


@pytest.fixture
def store_dir(tmp_path) -> str:
    mtt_helpers.make_store(tmp_path / "store", mtt_helpers.tiny_model())
    return str(tmp_path / "store")


# ("items", 1): one trajectory for two workers, so rank 1 idles and adds a zero contribution.
@pytest.mark.parametrize("split,trajectories", [("items", 2), ("items", 1), ("batch", 1)])
def test_mtt_two_workers_equal_one_process(tmp_path, store_dir, split, trajectories):
    single = mtt_case(LocalComm(), store_dir, split, trajectories, str(tmp_path / "single.ckpt"))
    single["start"] = mtt_helpers.make_state(dtype=torch.float32).images.detach()
    workers = run_process_group(2, mtt_case, store_dir, split, trajectories, str(tmp_path / "workers.ckpt"))
    _assert_same_update(single, workers)
    assert (tmp_path / "workers.ckpt").is_file()  # rank 0 wrote the checkpoint


def test_gradient_matching_two_workers_equal_one_process(tmp_path):
    single = gm_case(LocalComm(), str(tmp_path / "single.ckpt"))
    single["start"] = gm_helpers.tiny_state(ipc=2, frozen_ipc=1).images.detach()
    workers = run_process_group(2, gm_case, str(tmp_path / "workers.ckpt"))
    _assert_same_update(single, workers)


def sharded_without_reduce(comm, store_dir: str) -> float:
    """A deliberately broken variant: batch shards whose step updates are never summed."""
    model = mtt_helpers.tiny_model()
    config = MTTConfig(syn_steps=4, expert_epochs=2, max_start_epoch=2, batch_syn=6, memory_saving=True)
    matcher = MTTMatcher(config, TrajectoryStore.open(store_dir, layout=None), FlatForward(model), DSA(),
                         comm=comm, shard_batch=True)
    matcher._reduce = lambda vector: vector  # each worker now follows only its half-batch trajectory
    state = mtt_helpers.make_state(dtype=torch.float32)
    return all_reduce_contribution(matcher.contribution(state, mtt_helpers.ITEM), comm).loss


def test_the_per_step_reduction_is_what_makes_batch_shards_exact(store_dir):
    """Guards the comparison above: without the per-step all-reduce the loss is clearly different."""
    model = mtt_helpers.tiny_model()
    config = MTTConfig(syn_steps=4, expert_epochs=2, max_start_epoch=2, batch_syn=6, memory_saving=True)
    reference = MTTMatcher(config, TrajectoryStore.open(store_dir, layout=None), FlatForward(model), DSA())
    full = reference.contribution(mtt_helpers.make_state(dtype=torch.float32), mtt_helpers.ITEM).loss
    broken = run_process_group(2, sharded_without_reduce, store_dir)[0]
    assert abs(broken - full) > 1e-4 * abs(full)


def test_batch_split_needs_memory_saving_and_no_batch_norm(store_dir):
    class Two(LocalComm):
        world_size = 2

    store = TrajectoryStore.open(store_dir, layout=None)
    model = mtt_helpers.tiny_model()
    with pytest.raises(UserError, match="memory_saving"):
        MTTMatcher(MTTConfig(syn_steps=2, expert_epochs=2, max_start_epoch=2), store, FlatForward(model),
                   comm=Two(), shard_batch=True)
    from pdd_ray.models import create_model
    bn = create_model("convnet", 1, mtt_helpers.CLASSES, mtt_helpers.SIZE, width=4, depth=2, norm="batchnorm")
    config = MTTConfig(syn_steps=2, expert_epochs=2, max_start_epoch=2, memory_saving=True)
    with pytest.raises(UserError, match="batch norm"):
        MTTMatcher(config, store, FlatForward(bn), comm=Two(), shard_batch=True)


def test_local_comm_is_the_identity_and_shares_everything():
    comm = LocalComm()
    t = torch.arange(3.0)
    assert comm.all_reduce_(t) is t and comm.share([1, 2, 3]) == [1, 2, 3] and comm.broadcast_float(0.5) == 0.5


def test_workers_resuming_from_different_checkpoints_all_stop_with_a_user_error(tmp_path):
    gm_case(LocalComm(), str(tmp_path / "finished.ckpt"))  # a checkpoint at the last iteration
    resume = {0: str(tmp_path / "finished.ckpt"), 1: str(tmp_path / "missing.ckpt")}  # rank 1 starts afresh
    with pytest.raises(RuntimeError, match="workers resumed from different checkpoints") as failure:
        run_process_group(2, gm_case, str(tmp_path / "workers.ckpt"), resume, timeout_s=120)
    assert "UserError" in str(failure.value)
