"""The search space: Tune's param_space, the checked points, derived IPC, trial names, the step clock."""

import pytest

from pdd_ray.errors import UserError
from pdd_ray.sweep.config import SampleSpec, SweepConfig
from pdd_ray.sweep.space import (StepCounter, check_points, grid_points, param_space, trial_name,
                                 with_derived_ipc)


def _config(**fields) -> SweepConfig:
    return SweepConfig(base="b.yaml", **fields)


def test_param_space_maps_grid_to_grid_search_and_samples_to_distributions():
    from ray.tune.search.sample import Categorical, Float, Integer
    space = param_space(_config(grid={"stages.ipc": [1, 2]},
                                sample={"mtt.lr_img": SampleSpec("loguniform", 10, 1000),
                                        "seed": SampleSpec("randint", 0, 5),
                                        "method": SampleSpec("choice", values=["idc", "dc"]),
                                        "gm.lr_img": SampleSpec("uniform", 0.1, 0.2)}))
    assert space["stages.ipc"] == {"grid_search": [1, 2]}
    lr = space["mtt.lr_img"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (10, 1000) and "LogUniform" in type(lr.sampler).__name__
    assert isinstance(space["seed"], Integer) and (space["seed"].lower, space["seed"].upper) == (0, 5)
    assert isinstance(space["method"], Categorical) and space["method"].categories == ["idc", "dc"]
    assert "LogUniform" not in type(space["gm.lr_img"].sampler).__name__


def test_grid_points_are_the_cartesian_product_in_key_order():
    points = grid_points(_config(grid={"stages.num_stages": [1, 2], "stages.ipc": [1, 2, 5]}))
    assert len(points) == 6 and points[0] == {"stages.num_stages": 1, "stages.ipc": 1}
    assert points[-1] == {"stages.num_stages": 2, "stages.ipc": 5}
    assert grid_points(_config()) == [{}]


def test_check_points_cover_every_sampled_end_at_every_grid_point():
    config = _config(grid={"stages.ipc": [1, 2]},
                     sample={"gm.lr_img": SampleSpec("uniform", 0.1, 0.9), "seed": SampleSpec("randint", 0, 3)})
    points = check_points(config)
    for ipc in (1, 2):
        mine = [p for p in points if p["stages.ipc"] == ipc]
        assert {p["gm.lr_img"] for p in mine} == {0.1, 0.9} and {p["seed"] for p in mine} == {0, 2}


def test_total_ipc_derives_per_stage_ipc_and_refuses_non_divisors():
    assert with_derived_ipc({"stages.num_stages": 5}, 10, 3)["stages.ipc"] == 2
    assert with_derived_ipc({}, 10, 2) == {"stages.ipc": 5}  # num_stages from the base config
    assert with_derived_ipc({"a": 1}, None, 3) == {"a": 1}
    with pytest.raises(UserError, match="divisors of 10 \\(1, 2, 5, 10\\)"):
        with_derived_ipc({"stages.num_stages": 3}, 10, 1)


def test_trial_names_are_stable_readable_and_tell_close_values_apart():
    a = trial_name({"stages.num_stages": 2, "stages.ipc": 5})
    assert a == trial_name({"stages.ipc": 5, "stages.num_stages": 2})  # key order does not matter
    assert a.startswith("ipc=5_num_stages=2_") and "/" not in a
    close = trial_name({"mtt.lr_img": 1.000001}), trial_name({"mtt.lr_img": 1.000002})
    assert close[0].rsplit("_", 1)[0] == close[1].rsplit("_", 1)[0] == "lr_img=1" and close[0] != close[1]
    assert "/" not in trial_name({"data.root": "/a/b"})


def test_step_counter_ticks_once_per_check_and_keeps_counting_across_stages():
    steps = StepCounter(iterations=5, eval_every=2)  # checks at 0, 2, 4, 5
    assert steps.per_stage == 4
    seen = [steps.at(stage, it) for stage in range(2) for it in (0, 2, 4, 5)]
    assert seen == list(range(1, 9)) and steps.final(2) == 9
