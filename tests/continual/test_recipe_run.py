"""The Fashion-MNIST recipe end to end with tiny overrides: MTT experts train on their phase's classes only."""

from pathlib import Path

import torch

from pdd_ray.config import load_config
from pdd_ray.continual.config import ContinualConfig
from pdd_ray.continual.split import PhaseSplit
from pdd_ray.data.bundle import create_dataset
from pdd_ray.jobs.continual import run_continual

RECIPE = Path(__file__).parents[2] / "tune_configs" / "continual_fashion_mnist.yaml"
TINY_MTT = ["executor=process", "data.val_size=40", "data.train_per_class=null", "device=cpu", "augment.dsa=false",
            "model.width=4", "model.depth=2", "phases.num_phases=2", "eval.runs=1", "eval.epochs=1", "selection.epochs=1",
            "selection.width=4", "distill.stages.iterations=2", "distill.stages.eval_every=2",
            "distill.stages.eval_epochs=1", "distill.stages.checkpoint_every=2", "distill.mtt.syn_steps=2",
            "distill.mtt.expert_epochs=1", "distill.mtt.max_start_epoch=1", "distill.experts.num_experts=1",
            "distill.experts.recipe.epochs=2", "distill.experts.recipe.batch_size=64",
            "distill.experts.recipe.transition_epochs=1"]


def test_the_recipe_runs_with_tiny_overrides_and_experts_see_only_their_phase(tiny_fashion_root, tmp_path,
                                                                              monkeypatch, local_ray):
    import pdd_ray.experts.buffer as buffer
    real, handed = buffer.build_buffer, []

    def spy(experts, progress=True, data=None, synthetic=None):
        handed.append((experts.out, data, synthetic))
        return real(experts, progress, data=data, synthetic=synthetic)

    monkeypatch.setattr(buffer, "build_buffer", spy)
    config = load_config(ContinualConfig, RECIPE, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}",
                                                   *TINY_MTT])
    summary = run_continual(config, progress=False)
    assert set(summary["builders"]) == {"pdd_mtt_2stages", "mtt", "herding", "random"}
    assert all(len(b["phases"]) == 2 for b in summary["builders"].values())
    data = create_dataset(config.data)
    split = PhaseSplit.of(config.phases, data.num_classes, config.seed)
    # per phase: PDD's stage 1 and its transition stage 2, then single-stage MTT's one buffer
    assert [Path(out).relative_to(tmp_path / "run").parts[1:] for out, _, _ in handed] == [
        (name, f"phase_{t}", "experts", f"stage_{k}") for t in (1, 2)
        for name, k in (("pdd_mtt_2stages", 1), ("pdd_mtt_2stages", 2), ("mtt", 1))]
    for out, bundle, synthetic in handed:
        t = int(Path(out).parts[-3].split("_")[1]) - 1
        keep = torch.isin(data.train.labels, torch.tensor(split.classes(t)))
        assert torch.equal(bundle.train.images, data.train.images[keep])  # the phase's images, nothing else
        assert bundle.num_classes == 5
        if synthetic is not None:  # the transition union: the phase's own first stage, in phase labels
            assert set(torch.cat([s.labels for s in synthetic]).tolist()) <= set(range(5))
