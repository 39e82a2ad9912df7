"""Every shipped sweep recipe loads and validates every trial (no compute, no Ray)."""

from pathlib import Path

import pytest

from pdd_ray.sweep import load_sweep_config, make_plan
from pdd_ray.sweep.space import check_points

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "tune_configs").glob("sweep_*.yaml"))


def test_the_recipes_are_there():
    assert {p.stem for p in RECIPES} >= {"sweep_stages_x_ipc_fashion_mnist", "sweep_lr_img_syn_steps"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_sweep_recipe_validates(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # recipes name their base next to themselves: they load from any directory
    plan = make_plan(load_sweep_config(path))
    configs = [plan.trial_config(p) for p in check_points(plan.config)]
    assert plan.config.gpus_per_trial > 0 and all(c.method == "mtt" for c in configs)
    assert {c.buffer for c in configs} == {str(Path(plan.work_dir) / "experts" / "stage_1")}


def test_flagship_keeps_ten_images_per_class_over_every_stage_count(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    plan = make_plan(load_sweep_config(REPO / "tune_configs" / "sweep_stages_x_ipc_fashion_mnist.yaml"))
    shapes = [(c.stages.num_stages, c.stages.ipc) for c in map(plan.trial_config, check_points(plan.config))]
    assert shapes == [(1, 10), (2, 5), (5, 2), (10, 1)]
