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
        "experts.recipe.transition_epochs=2", "eval.runs=1", "eval.epochs=2", "stages.val_nets=1"]


def test_run_command_with_mtt_builds_transition_experts_and_reports(tmp_path, tiny_fashion_root, capsys):
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        code = main(["run", "--config", "default", "--data-root", str(tiny_fashion_root),
                     "--out", str(tmp_path / "run"), *TINY])
    finally:
        ray.shutdown()
    assert code == 0
    printed = capsys.readouterr().out
    assert "PDD (mtt, progressive)" in printed and "random real images" in printed
    rows = {line.split("  ")[0]: line.split() for line in printed.splitlines() if line.startswith(("PDD", "random"))}
    # eval.epochs 2 runs 3 epochs per stage: 6 in all for PDD, and the same budget for random real images
    assert rows["PDD (mtt, progressive)"][4] == "6" and rows["random real images"][4] == "6"
    stage1 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_1")
    stage2 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_2")
    assert stage1.info(0)["init"] == "random" and stage2.info(0)["init"] == "transition"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["ipc"] for s in metrics["stages"]] == [1, 1]
    # every stage starts its learnable lr afresh at lr_teacher, then learns its own
    assert [h[0]["lr"] for h in metrics["history"]] == [pytest.approx(0.01), pytest.approx(0.01)]
    assert all(h[-1]["lr"] != pytest.approx(h[0]["lr"], rel=1e-4) for h in metrics["history"])


def test_stage_two_experts_continue_the_chain_from_stage_one(tmp_path, tiny_fashion_root):
    """Expert k of stage 2 = snapshot 0 of expert k of stage 1, trained on U_1 with S_1's lr, redone by hand."""
    import torch

    from pdd_ray import synset as synset_io
    from pdd_ray.config import load_config
    from pdd_ray.data.bundle import create_dataset
    from pdd_ray.distill.config import DistillConfig
    from pdd_ray.distill.transitions import experts_config
    from pdd_ray.experts.train import transition_init
    from pdd_ray.models import model_factory
    from pdd_ray.models import flatten_params
    from pdd_ray.models.functional import load_flat_

    config = load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}", *TINY,
                                               "evaluate=false"])
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        from pdd_ray.jobs.run import run_pdd
        run_pdd(config, progress=False)
    finally:
        ray.shutdown()
    stage1 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_1")
    stage2 = TrajectoryStore.open(tmp_path / "run" / "experts" / "stage_2")
    s1 = synset_io.load(tmp_path / "run" / "synthetic").stages[0]
    chained = experts_config(config, 1)
    data = create_dataset(config.data)
    make = model_factory(config.model, data.image_shape, data.num_classes, torch.device("cpu"))
    assert stage2.num_snapshots == 1 + 1 + 1 + 1  # init + (max_start 1 + expert_epochs 1 + 1) real epochs
    for k in range(2):
        seed = chained.seed + k
        torch.manual_seed(seed)
        model = load_flat_(make(), stage1.snapshot(k, 0))
        transition_init(model, (*s1.training_data(), s1.lr), chained.recipe.transition_epochs, None,
                        torch.Generator().manual_seed(seed), chained.recipe.batch_size)
        assert torch.equal(stage2.snapshot(k, 0), flatten_params(model))
