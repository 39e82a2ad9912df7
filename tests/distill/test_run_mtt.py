"""``pdd-ray run`` with the MTT base end to end on tiny data: Ray experts, transition experts, 2 stages, report."""

import json

import pytest
import ray

from pdd_ray.cli import main
from pdd_ray.trajectories import TrajectoryStore

TINY = ["model.width=4", "model.depth=2", "data.val_size=40", "device=cpu", "augment.dsa=false",
        "stages.num_stages=2", "stages.ipc=1", "stages.iterations=3", "stages.eval_every=3", "stages.eval_epochs=2",
        "stages.checkpoint_every=3", "mtt.syn_steps=3", "mtt.expert_epochs=1", "mtt.max_start_epoch=1",
        "mtt.lr_img=10", "mtt.lr_lr=0.001", "experts.num_experts=2", "experts.recipe.epochs=2", "experts.recipe.batch_size=64",
        "experts.recipe.transition_epochs=2", "eval.runs=1", "eval.epochs=2"]


def test_run_command_with_mtt_builds_transition_experts_and_reports(tmp_path, tiny_fashion_root, capsys):
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        code = main(["run", "--data-root", str(tiny_fashion_root), "--out", str(tmp_path / "run"), *TINY])
    finally:
        ray.shutdown()
    assert code == 0
    printed = capsys.readouterr().out
    assert "PDD (mtt, progressive)" in printed and "random real images" in printed
    stage1 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_1")
    stage2 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_2")
    assert stage1.info(0)["init"] == "random" and stage2.info(0)["init"] == "transition"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["ipc"] for s in metrics["stages"]] == [1, 1]
    # every stage starts its learnable lr afresh at lr_teacher, then learns its own
    assert [h[0]["lr"] for h in metrics["history"]] == [pytest.approx(0.01), pytest.approx(0.01)]
    assert all(h[-1]["lr"] != pytest.approx(h[0]["lr"], rel=1e-4) for h in metrics["history"])
