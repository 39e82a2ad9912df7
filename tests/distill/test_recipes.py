from pathlib import Path

import pytest

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig

RECIPES = sorted(p for p in (Path(__file__).parents[2] / "tune_configs").glob("*.yaml")
                 if not p.name.startswith(("experts_", "sweep_", "cluster", "continual_")))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_run_recipe_validates(path):
    config = load_config(DistillConfig, path)
    assert config.stages.num_stages * config.stages.ipc in (1, 2, 10, 50)
    if config.method == "mtt":
        needed = config.mtt.max_start_epoch + config.mtt.expert_epochs
        stored = min(config.experts.recipe.epochs, config.experts.recipe.store_epochs or 10**9)
        assert stored >= needed, "experts must store the epochs matching reads"
