"""The transition budget: the reference's epochs on U_i, or a fixed number of SGD steps per stage."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.errors import UserError
from pdd_ray.experts.buffer import _recipe_record
from pdd_ray.experts.train import ExpertRecipe, transition_init
from pdd_ray.models import create_model


def _make():
    return create_model("convnet", 1, 4, 8, width=4, depth=2)


def _union(n: int):
    gen = torch.Generator().manual_seed(n)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % 4, 0.05


def _steps_taken(union, **budget) -> list[float]:
    """The lr of every SGD step transition_init takes."""
    lrs = []
    handle = register_optimizer_step_post_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    try:
        transition_init(_make(), union, generator=torch.Generator().manual_seed(0), augment=None, batch_size=16,
                        **budget)
    finally:
        handle.remove()
    return lrs


@pytest.mark.parametrize("size", [3, 16, 50])
def test_a_step_budget_trains_exactly_n_steps_whatever_the_union_size(size):
    lrs = _steps_taken(_union(size), epochs=None, steps=7)
    assert len(lrs) == 7
    assert lrs[:3] == pytest.approx([0.05] * 3) and lrs[3:] == pytest.approx([0.005] * 4)  # x0.1 from 7 // 2


def test_an_epoch_budget_grows_with_the_union():
    # 2 epochs under the official schedule train 3 epochs: 1 batch each at 16 images, 4 at 50
    assert len(_steps_taken(_union(16), epochs=2)) == 3
    assert len(_steps_taken(_union(50), epochs=2)) == 12


@pytest.mark.parametrize("overrides, fragment", [
    (["experts.recipe.transition_steps=100"], "exactly one of"),
    (["experts.recipe.transition_epochs=null"], "exactly one of"),
    (["experts.recipe.transition_epochs=null", "experts.recipe.transition_steps=0"], "transition_steps must be >= 1"),
    (["experts.recipe.transition_epochs=0"], "transition_epochs must be >= 1"),
])
def test_budget_mistakes_are_one_line_errors_before_compute(overrides, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        load_config(DistillConfig, None, ["device=cpu", *overrides])
    assert "\n" not in str(err.value)


def test_a_step_budget_loads_and_the_default_stays_faithful():
    config = load_config(DistillConfig, None, ["device=cpu", "experts.recipe.transition_epochs=null",
                                               "experts.recipe.transition_steps=300"])
    assert config.experts.recipe.transition_steps == 300
    assert ExpertRecipe().transition_epochs == 1000 and ExpertRecipe().transition_steps is None


def test_buffers_recorded_before_the_step_budget_still_resume():
    # An unset step budget is not part of the recorded recipe, so older manifests match.
    config = load_config(DistillConfig, None, ["device=cpu"]).experts
    assert "transition_steps" not in _recipe_record(config)
    stepped = load_config(DistillConfig, None, ["device=cpu", "experts.recipe.transition_epochs=null",
                                                "experts.recipe.transition_steps=5"]).experts
    assert _recipe_record(stepped)["transition_steps"] == 5


def test_run_fingerprints_recorded_before_the_new_settings_still_match():
    # A run's fingerprint covers its experts section through `identity`: settings added later are
    # invisible at their defaults (keep=all, no step budget), so runs begun earlier still resume.
    from pdd_ray.config import to_dict
    from pdd_ray.experts.buffer import identity
    config = load_config(DistillConfig, None, ["device=cpu"])
    fields = identity(to_dict(config.experts))
    assert "keep" not in fields and "transition_steps" not in fields["recipe"]
    kept = load_config(DistillConfig, None, ["device=cpu", "experts.keep=last"])
    assert identity(to_dict(kept.experts)) == fields  # what is kept on disk does not change the images


def test_expert_precision_is_invisible_at_fp32_and_part_of_the_identity_otherwise():
    from pdd_ray.config import to_dict
    from pdd_ray.errors import UserError
    from pdd_ray.experts.buffer import identity
    plain = identity(to_dict(load_config(DistillConfig, None, ["device=cpu"]).experts))
    assert "precision" not in plain  # buffers and runs recorded before the setting existed still resume
    bf16 = identity(to_dict(load_config(DistillConfig, None, ["device=cpu", "experts.precision=bf16"]).experts))
    assert bf16 == {**plain, "precision": "bf16"}  # other numbers: never mixed into an fp32 buffer
    with pytest.raises(UserError, match="experts.precision must be one of auto, fp32, bf16"):
        load_config(DistillConfig, None, ["device=cpu", "experts.precision=fp16"]).validate()
