"""The sweep plan: every trial's run config checked before any compute, the shared MTT buffer, paths."""

import re
from pathlib import Path

import pytest

from pdd_ray.cli import main
from pdd_ray.errors import UserError
from pdd_ray.sweep import load_sweep_config, make_plan
from pdd_ray.sweep.space import trial_name


def _plan(write_sweep, *overrides, **fields):
    return make_plan(load_sweep_config(write_sweep(**fields), list(overrides)))


def test_trial_configs_get_their_own_run_dir_the_overrides_and_the_derived_ipc(write_sweep, tmp_path):
    plan = _plan(write_sweep, total_ipc=4, grid={"stages.num_stages": [1, 2, 4]},
                 overrides=["stages.iterations=3", "eval.runs=2"])
    config = plan.trial_config({"stages.num_stages": 4})
    assert config.out == str(tmp_path / "sweep" / "trials" / trial_name({"stages.num_stages": 4}))
    assert (config.stages.num_stages, config.stages.ipc, config.stages.iterations, config.eval.runs) == (4, 1, 3, 2)
    assert config.buffer is None and plan.buffer is None  # gradient matching shares no buffer
    assert plan.experiment_path == str(tmp_path / "sweep" / "tune")
    # ASHA's horizon: the final report of the longest trial (3 iterations, check every 2: 3 checks per stage)
    assert plan.max_steps == 4 * 3 + 1


def test_mtt_trials_share_one_stage_one_buffer_and_reserve_room_for_transition_experts(write_sweep, tmp_path):
    plan = _plan(write_sweep, overrides=["method=mtt"], grid={"stages.num_stages": [1, 2]})
    assert plan.buffer == str(tmp_path / "sweep" / "experts" / "stage_1") and plan.build_buffer
    assert {plan.trial_config({"stages.num_stages": n}).buffer for n in (1, 2)} == {plan.buffer}
    assert plan.transition_experts == {"CPU": 1.0, "GPU": 0.0}
    no_transitions = _plan(write_sweep, overrides=["method=mtt", "stages.transitions=false"],
                           grid={"stages.num_stages": [1, 2]})
    assert no_transitions.transition_experts is None


def test_a_buffer_named_by_the_base_is_used_as_is(write_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(write_sweep, overrides=["method=mtt", "buffer=prebuilt"], grid={"experts.num_experts": [2, 3]})
    assert plan.buffer == str(tmp_path / "prebuilt") and not plan.build_buffer  # and experts.* may vary then


@pytest.mark.parametrize("fields,overrides,fragment", [
    (dict(grid={"stages.nope": [1, 2]}), [], "trial {stages.nope=1}: unknown config key 'stages.nope'"),
    (dict(grid={"stages.ipc": [1, 0]}), [], "trial {stages.ipc=0}: stages.ipc must be >= 1"),
    (dict(sample={"stages.iterations": {"type": "uniform", "low": 1, "high": 4}}), [], "must be int"),
    (dict(total_ipc=10, grid={"stages.num_stages": [1, 2, 3]}), [], "not divisible by stages.num_stages=3"),
    (dict(total_ipc=9), [], "not divisible by stages.num_stages=2"),  # the base has 2 stages
    (dict(total_ipc=4, grid={"stages.ipc": [1, 2]}), [], "do not also set or sweep stages.ipc"),
    (dict(total_ipc=4, sample={"stages.num_stages": {"type": "randint", "low": 1, "high": 3}}), [], "in grid"),
    (dict(grid={"experts.num_experts": [2, 3]}), ["method=mtt"], "'experts.num_experts' cannot be swept"),
    (dict(grid={"data.val_size": [40, 50]}), ["method=mtt"], "cannot be swept with method=mtt"),
    (dict(grid={"method": ["idc", "mtt"], "model.width": [4, 8]}), [], "cannot be swept with method=mtt"),
    (dict(grid={"buffer": ["/a", "/b"]}), [], "'buffer' cannot be swept"),
    (dict(overrides=["out=/elsewhere"]), [], "set by the sweep"),
    (dict(overrides=["device=cuda"]), [], "gpus_per_trial > 0"),
    (dict(overrides=["parallel.workers=2"]), [], "sweep trials run with parallel.workers=1"),
])
def test_bad_points_fail_before_any_compute(write_sweep, fields, overrides, fragment):
    fields = {**fields, "overrides": fields.get("overrides", []) + overrides}  # run-config overrides
    with pytest.raises(UserError, match=re.escape(fragment)):
        _plan(write_sweep, **fields)


def test_the_command_refuses_a_bad_sweep_with_one_line_before_ray_or_experts_start(write_sweep, tmp_path,
                                                                                     monkeypatch, capsys):
    import pdd_ray.cluster
    import pdd_ray.experts.buffer

    def forbidden(*args, **kwargs):
        raise AssertionError("compute started")

    monkeypatch.setattr(pdd_ray.cluster, "ray_session", forbidden)
    monkeypatch.setattr(pdd_ray.experts.buffer, "build_buffer", forbidden)
    path = write_sweep(overrides=["method=mtt"], grid={"experts.recipe.epochs": [30, 40]})
    assert main(["sweep", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdd-ray sweep: error:") and "experts.recipe.epochs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()  # nothing written either


def test_fingerprint_follows_the_sweep_not_the_cluster_it_runs_on(write_sweep):
    plan = _plan(write_sweep, grid={"stages.ipc": [1, 2]})
    same = _plan(write_sweep, "address=ray://head:10001", grid={"stages.ipc": [1, 2]})
    other = _plan(write_sweep, grid={"stages.ipc": [1, 3]})
    more_cpus = _plan(write_sweep, "cpus_per_trial=2", grid={"stages.ipc": [1, 2]})  # Tune would keep the old
    assert plan.fingerprint() == same.fingerprint()
    assert len({plan.fingerprint(), other.fingerprint(), more_cpus.fingerprint()}) == 3


def test_relative_data_root_is_made_absolute_for_trials_running_elsewhere(write_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(write_sweep, overrides=["data.root=fashion"])
    assert plan.trial_config({}).data.root == str(Path(tmp_path / "fashion"))
