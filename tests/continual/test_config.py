"""ContinualConfig: the recipes load and validate; mistakes are one-line UserErrors before any compute."""

from pathlib import Path

import pytest

from pdd_ray.config import load_config
from pdd_ray.continual.config import ContinualConfig
from pdd_ray.errors import UserError

RECIPES = Path(__file__).parents[2] / "tune_configs"


def test_the_cifar100_recipe_is_the_papers_table_7_and_targets_a_gpu():
    config = load_config(ContinualConfig, RECIPES / "continual_cifar100.yaml")
    assert config.data.dataset == "cifar100" and config.phases.num_phases == 5 and config.memory.ipc == 10
    assert [b.label for b in config.builders] == ["pdd_mtt_5stages", "mtt", "dsa", "herding", "random"]
    pdd = config.run_config(config.builders[0])
    assert (pdd.stages.num_stages, pdd.stages.ipc, pdd.method) == (5, 2, "mtt")
    mtt, dsa = (config.run_config(b) for b in config.builders[1:3])
    assert (mtt.stages.num_stages, mtt.stages.ipc) == (1, 10) and (dsa.method, dsa.stages.ipc) == ("dsa", 10)
    assert dsa.gm.net_updates == 50 and dsa.stages.iterations == 10010  # the builder's run: over distill:
    assert config.device == "cuda" and pdd.device == "cuda" and pdd.experts.gpus_per_expert > 0


def test_the_fashion_mnist_recipe_compares_pdd_mtt_mtt_herding_random_at_equal_memory():
    config = load_config(ContinualConfig, RECIPES / "continual_fashion_mnist.yaml")
    assert config.data.dataset == "fashion_mnist" and config.phases.num_phases == 5
    assert [b.method for b in config.builders] == ["mtt", "mtt", "herding", "random"]
    distilled = [config.run_config(b).stages for b in config.builders[:2]]
    assert [s.num_stages * s.ipc for s in distilled] == [config.memory.ipc] * 2
    assert config.selection_config().ipc == config.memory.ipc


@pytest.mark.parametrize("override,message", [
    ("memory.ipc=3", "not a multiple"),
    ("distill.out=elsewhere", "'out' is set by the continual config"),
    ("distill.data.dataset=cifar10", "'data' is set by the continual config"),
    ("distill.stages.ipc=5", "not stages.num_stages"),
    ("distill.parallel.workers=2", "parallel.workers must be 1"),
    ("distill.mtt.syn_steps=0", "syn_steps"),
    ("builders=[{method: nope}]", "unknown memory builder 'nope'"),
    ("builders=[{method: random}, {method: random}]", "both named 'random'"),
    ("builders=[{method: herding, stages: 2}]", "a coreset takes no stages"),
    ("builders=[]", "builders is empty"),
    ("builders=[{method: mtt, stages: 2}, {method: mtt, stages: 4}]", "equal_budget"),
    ("phases.num_phases=3", "does not divide"),
    ("phases.class_order=[0, 1, 2]", "exactly once"),
    ("executor=threads", "executor must be one of"),
    ("device=cuda:x", "device must be"),
])
def test_mistakes_fail_in_one_line_before_any_compute(override, message):
    base = ["builders=[{method: mtt, stages: 2}, {method: random}]", "memory.ipc=4"]
    with pytest.raises(UserError, match=message) as caught:
        load_config(ContinualConfig, None, [*base, override])
    assert "\n" not in str(caught.value)


def test_a_memory_larger_than_a_phase_class_is_refused_before_any_compute(make_config, monkeypatch):
    import pdd_ray.jobs.continual as job
    from pdd_ray.jobs.continual import run_continual
    monkeypatch.setattr(job, "build_all", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(UserError, match="needs 30 training images per class"):
        run_continual(make_config("memory.ipc=30", "builders=[{method: dc}]"), progress=False)
