"""``experts.keep: last``: a finished stage's buffer goes once the next stage's is built; resume still works."""

import ray
import torch

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.transitions import ensure_experts, expert_dir
from pdd_ray.experts import buffer
from pdd_ray.models import create_model
from pdd_ray.models.functional import ParamLayout
from pdd_ray.trajectories import TrajectoryStore
from tests.distill.test_run_mtt import TINY


def _config(tmp_path, *extra):
    return load_config(DistillConfig, None, ["device=cpu", f"out={tmp_path / 'run'}", "mtt.max_start_epoch=1",
                                             "mtt.expert_epochs=1", "experts.num_experts=1", "experts.keep=last",
                                             "stages.num_stages=3", *extra])


def _complete_store(directory):
    layout = ParamLayout.of(create_model("convnet", 1, 4, 8, width=4, depth=2))
    store = TrajectoryStore.create(directory, dataset="toy", preprocessing={}, model={}, layout=layout, recipe={},
                                   num_snapshots=1)
    store.write_expert(0, torch.zeros(1, layout.numel), {"seed": 0})


def _fake_builds(monkeypatch):
    built = []
    monkeypatch.setattr(buffer, "build_buffer", lambda experts, **kw: (built.append(experts.out),
                                                                      _complete_store(experts.out)))
    return built


def test_the_previous_buffer_goes_once_the_next_is_built_and_a_resume_needs_neither(tmp_path, monkeypatch):
    config = _config(tmp_path)
    built = _fake_builds(monkeypatch)
    for index in range(3):
        ensure_experts(config, index, False)
    assert [expert_dir(config, i).exists() for i in range(3)] == [False, False, True]
    # A resumed stage 3 finds its buffer complete and its chain's start gone: nothing to build or check.
    ensure_experts(config, 2, False)
    assert len(built) == 3


def test_given_buffers_forgetting_scores_and_keep_all_are_never_deleted(tmp_path, monkeypatch):
    _fake_builds(monkeypatch)
    given = tmp_path / "given"
    _complete_store(given)
    config = _config(tmp_path, f"buffer={given}")
    ensure_experts(config, 1, False)
    assert given.exists()
    curriculum = _config(tmp_path / "c", "stages.forgetting_curriculum=true", "experts.track_forgetting=true")
    ensure_experts(curriculum, 0, False)
    ensure_experts(curriculum, 1, False)
    assert expert_dir(curriculum, 0).exists()  # later stages' partitions read its forgetting scores
    keep_all = _config(tmp_path / "a", "experts.keep=all")
    for index in range(2):
        ensure_experts(keep_all, index, False)
    assert expert_dir(keep_all, 0).exists()


def test_a_run_killed_after_a_deletion_resumes_to_the_end(tmp_path, tiny_fashion_root):
    from pdd_ray.jobs.run import run_pdd
    config = load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}", *TINY,
                                               "stages.num_stages=3", "experts.keep=last", "evaluate=false"])

    def crash(stage, iteration):
        if stage == 2:
            raise KeyboardInterrupt  # stage 3's buffer is built, stage 2's already deleted
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        try:
            run_pdd(config, progress=False, on_iteration=crash)
        except KeyboardInterrupt:
            pass
        assert not expert_dir(config, 1).exists() and expert_dir(config, 2).exists()
        summary = run_pdd(config, progress=False)
    finally:
        ray.shutdown()
    assert summary["stages"] == 3 and [expert_dir(config, i).exists() for i in range(3)] == [False, False, True]
