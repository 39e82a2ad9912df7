"""``parallel.workers=2`` through Ray Train: same synthetic set as the in-process driver, and a dead worker
resumes the group from the last reported checkpoint."""

from __future__ import annotations

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import FAIL_ONCE_ENV
from pdd_ray.jobs.run import run_pdd
from tests.distill.test_driver import TINY

SHORT = [*TINY, "stages.num_stages=2", "stages.iterations=4", "stages.checkpoint_every=2", "evaluate=false"]


@pytest.fixture
def ray_with_fault_injection(tmp_path):
    ray = pytest.importorskip("ray")
    markers = tmp_path / "markers"
    markers.mkdir()
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {FAIL_ONCE_ENV: str(markers)}})
    yield markers
    ray.shutdown()


@pytest.mark.slow
def test_two_ray_train_workers_match_the_single_process_driver_after_a_worker_failure(
        tmp_path, tiny_fashion_root, ray_with_fault_injection):
    common = [f"data.root={tiny_fashion_root}", *SHORT]
    single = load_config(DistillConfig, None, [*common, f"out={tmp_path / 'single'}"])
    parallel = load_config(DistillConfig, None, [*common, f"out={tmp_path / 'parallel'}", "parallel.workers=2",
                                                 "parallel.max_failures=1"])
    seen = {"single": [], "parallel": []}
    for name, config in (("single", single), ("parallel", parallel)):
        run_pdd(config, progress=False, on_validation=lambda stage, it, acc, n=name: seen[n].append((stage, it, acc)))
    # The Ray Train runner delivers the same hooks (rank 0's, through a queue); the restarted group re-reports
    # the checks it redid, so compare what was seen last for each (stage, iteration).
    assert {(s, it): acc for s, it, acc in seen["parallel"]}.keys() == {(s, it) for s, it, _ in seen["single"]}

    assert any(ray_with_fault_injection.iterdir()), "the injected worker failure must have happened"
    singles = synset_io.load(tmp_path / "single" / "synthetic").stages
    parallels = synset_io.load(tmp_path / "parallel" / "synthetic").stages
    assert len(singles) == len(parallels) == 2  # stage 2 is conditioned on stage 1 on the workers too
    for a, b in zip(singles, parallels):
        assert a.info["best_iteration"] == b.info["best_iteration"]
        assert [h["iteration"] for h in b.info["history"]] == [h["iteration"] for h in a.info["history"]]
        assert float((a.images - b.images).norm() / a.images.norm()) <= 1e-5
        assert torch.equal(a.labels, b.labels)
    assert (tmp_path / "parallel" / "stages" / "stage_2.ckpt").is_file()
    # The restarted group continued from the checkpoint at iteration 2; it did not start the stage over.
    assert parallels[0].info["resumed_at"] == [2] and parallels[1].info["resumed_at"] == []
    assert singles[0].info["resumed_at"] == []


def test_parallel_config_is_checked_before_compute(tiny_fashion_root):
    base = [f"data.root={tiny_fashion_root}", *SHORT]
    with pytest.raises(UserError, match="split=batch is for method=mtt"):
        load_config(DistillConfig, None, [*base, "parallel.workers=2", "parallel.split=batch"])
    with pytest.raises(UserError, match="memory_saving"):
        load_config(DistillConfig, None, [*base, "method=mtt", "parallel.workers=2", "parallel.split=batch"])
    with pytest.raises(UserError, match="parallel.workers"):
        load_config(DistillConfig, None, [*base, "parallel.workers=0"])
    with pytest.raises(UserError, match="nccl"):
        load_config(DistillConfig, None, [*base, "parallel.backend=nccl"])
    with pytest.raises(UserError, match="whole GPUs"):
        load_config(DistillConfig, None, [*base, "parallel.use_gpu=true", "parallel.gpus_per_worker=0.5",
                                          "parallel.backend=nccl"])
    with pytest.raises(UserError, match="batch_syn >= 4"):
        load_config(DistillConfig, None, [*base, "method=mtt", "mtt.memory_saving=true", "mtt.batch_syn=2",
                                          "parallel.workers=4", "parallel.split=batch"])
    fractional = load_config(DistillConfig, None, [*base, "parallel.use_gpu=true", "parallel.gpus_per_worker=0.5"])
    assert fractional.parallel.resolved_backend() == "gloo"  # NCCL cannot put two ranks on one GPU


def test_a_user_error_raised_on_a_worker_reaches_the_cli_as_one_line():
    from pdd_ray.errors import user_error_in
    wrapped = RuntimeError("Training failed due to worker errors:\n[Rank 0]\nTraceback ...\n"
                           "pdd_ray.errors.UserError: data root /nope does not exist")
    assert str(user_error_in(wrapped)) == "data root /nope does not exist"
    try:
        try:
            raise UserError("bad buffer")
        except UserError as inner:
            raise RuntimeError("worker group failed") from inner
    except RuntimeError as outer:
        assert str(user_error_in(outer)) == "bad buffer"
    assert user_error_in(RuntimeError("CUDA out of memory")) is None


def test_a_worker_group_that_cannot_fit_fails_fast_locally_and_waits_on_a_remote_cluster():
    from pdd_ray.parallel import ParallelConfig
    from pdd_ray.parallel.trainer import check_capacity
    check_capacity(ParallelConfig(workers=2), {"CPU": 2.0}, remote=False)  # fits: no error
    with pytest.raises(UserError, match="needs 3 CPU"):
        check_capacity(ParallelConfig(workers=3), {"CPU": 2.0}, remote=False)
    with pytest.raises(UserError, match="GPU"):
        check_capacity(ParallelConfig(workers=2, use_gpu=True, gpus_per_worker=0.5), {"CPU": 8.0}, remote=False)
    check_capacity(ParallelConfig(workers=3), {"CPU": 2.0}, remote=True)  # an autoscaler may add nodes


def test_a_local_worker_group_too_big_for_this_machine_fails_before_any_expert_is_trained(
        tmp_path, tiny_fashion_root, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    config = load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}",
                                               *SHORT, "method=mtt", "parallel.workers=3"])
    with pytest.raises(UserError, match="needs 3 CPU"):
        run_pdd(config, progress=False)
    assert not (tmp_path / "run" / "experts").exists()


def test_rank_zero_iteration_events_carry_the_step_values_to_the_driver_hooks():
    from pdd_ray.distill.runners import StageHooks
    from pdd_ray.parallel.trainer import _HookRelay, _iteration_hooks

    class Events(list):
        put = list.append

    events, failures = Events(), []
    on_step, on_iteration = _iteration_hooks(failures.append, events)
    on_step(1, {"loss": 0.5, "lr": 0.01, "skipped_nonfinite": 0})
    on_iteration(1)
    seen = []
    relay = _HookRelay(StageHooks(on_iteration=lambda it: seen.append(("iteration", it)),
                                  on_step=lambda it, values: seen.append(("step", it, values))))
    for event in events:
        relay._deliver(event)
    assert failures == [1]  # the fault injection still sees every iteration
    assert seen == [("step", 1, {"loss": 0.5, "lr": 0.01, "skipped_nonfinite": 0}), ("iteration", 1)]
