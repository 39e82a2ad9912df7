"""SweepConfig: YAML + key=value, nested or dotted keys, and the mistakes refused on load."""

from pathlib import Path

import pytest

from pdd_ray.errors import UserError
from pdd_ray.sweep.config import SampleSpec, flatten_keys, load_sweep_config


def test_nested_and_dotted_keys_end_up_flat_and_cli_overrides_refine_them(write_sweep):
    path = write_sweep(grid={"stages": {"num_stages": [1, 2]}},
                       sample={"gm.lr_img": {"type": "loguniform", "low": 0.01, "high": 1}})
    config = load_sweep_config(path, ["grid.stages.ipc=[1, 3]", "sample.gm.lr_img.high=10"])
    assert config.grid == {"stages.num_stages": [1, 2], "stages.ipc": [1, 3]}
    assert config.sample == {"gm.lr_img": SampleSpec("loguniform", 0.01, 10.0, None)}


def test_out_becomes_absolute_and_base_is_found_next_to_the_sweep_file(tmp_path, tiny_base, monkeypatch):
    (tmp_path / "sweep.yaml").write_text("base: base.yaml\nout: rel/out\n")
    monkeypatch.chdir(tmp_path / "fashion")  # base.yaml is not in the working directory
    config = load_sweep_config(tmp_path / "sweep.yaml")
    assert config.out == str(tmp_path / "fashion" / "rel" / "out")
    assert config.base == str(tiny_base)


def _two_bases(tmp_path, tiny_base) -> Path:
    """sweeps/sweep.yaml naming base.yaml, with a different base.yaml in both sweeps/ and the working dir."""
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "base.yaml").write_text(tiny_base.read_text())
    (tmp_path / "sweeps" / "sweep.yaml").write_text("base: base.yaml\n")
    return tmp_path / "sweeps" / "sweep.yaml"


def test_base_next_to_the_sweep_file_wins_over_one_in_the_working_directory(tmp_path, tiny_base, monkeypatch):
    sweep = _two_bases(tmp_path, tiny_base)
    monkeypatch.chdir(tmp_path)  # tmp_path/base.yaml (tiny_base) is there too
    assert load_sweep_config(sweep).base == str(tmp_path / "sweeps" / "base.yaml")


def test_base_typed_on_the_command_line_is_relative_to_the_working_directory(tmp_path, tiny_base, monkeypatch):
    sweep = _two_bases(tmp_path, tiny_base)
    monkeypatch.chdir(tmp_path)
    assert load_sweep_config(sweep, ["base=base.yaml"]).base == str(tiny_base)


def test_a_base_only_in_the_working_directory_is_still_found(tmp_path, tiny_base, monkeypatch):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "sweep.yaml").write_text("base: base.yaml\n")  # the older cwd-relative spelling
    monkeypatch.chdir(tmp_path)
    assert load_sweep_config(tmp_path / "sweeps" / "sweep.yaml").base == str(tiny_base)


def test_a_missing_base_says_where_it_was_looked_for(tmp_path, monkeypatch):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "sweep.yaml").write_text("base: nowhere.yaml\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="base config not found") as caught:
        load_sweep_config(tmp_path / "sweeps" / "sweep.yaml")
    assert str(Path("sweeps") / "nowhere.yaml") in str(caught.value)


def test_a_uri_out_is_passed_through_and_needs_a_work_dir(write_sweep, tmp_path):
    config = load_sweep_config(write_sweep(out="s3://bucket/sweeps/a", work_dir=str(tmp_path / "w")))
    assert config.out == "s3://bucket/sweeps/a" and config.work_dir == str(tmp_path / "w")
    with pytest.raises(UserError, match="work_dir"):
        load_sweep_config(write_sweep(out="s3://bucket/sweeps/a"))


@pytest.mark.parametrize("overrides,fragment", [
    (["nonsense=1"], "unknown config key 'nonsense'"),
    (["grid={stages.ipc: 3}"], "non-empty list"),
    (["grid={stages.ipc: []}"], "non-empty list"),
    (["sample={gm.lr_img: {type: normal, low: 0, high: 1}}"], "type must be one of"),
    (["sample={gm.lr_img: {type: loguniform, low: 0, high: 1}}"], "low > 0"),
    (["sample={gm.lr_img: {type: uniform, low: 2, high: 1}}"], "low < high"),
    (["sample={seed: {type: choice}}"], "non-empty 'values'"),
    (["sample={seed: {type: choice, values: [1]}}", "grid={seed: [1, 2]}"], "both in grid and in sample"),
    (["scheduler=pbt"], "scheduler must be one of"),
    (["metric=test_accuracy"], "never used for selection"),
    (["num_samples=0"], "num_samples"),
    (["num_samples=3"], "repeats identical trials"),
    (["cpus_per_trial=0"], "cpus_per_trial"),
    (["gpus_per_trial=1.5"], "whole"),
    (["total_ipc=0"], "total_ipc"),
    (["asha.reduction_factor=1"], "reduction_factor"),
    (["base=null"], "base must name"),
    (["base=/nonexistent.yaml"], "base config not found"),
])
def test_sweep_config_mistakes_are_user_errors(write_sweep, overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        load_sweep_config(write_sweep(), overrides)


def test_flatten_keys_stops_at_leaves():
    nested = {"a": {"b": [1], "c": {"d": [2]}}, "e.f": [3]}
    assert flatten_keys(nested, lambda v: not isinstance(v, dict), "grid") == {"a.b": [1], "a.c.d": [2], "e.f": [3]}


def test_sample_ends_are_what_validation_tries():
    assert SampleSpec("randint", 2, 5).ends() == [2, 4]  # high is exclusive, as in Tune
    assert SampleSpec("loguniform", 0.1, 10).ends() == [0.1, 10]
    assert SampleSpec("choice", values=["a", "b"]).ends() == ["a", "b"]


def test_missing_sweep_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_sweep_config(Path(tmp_path / "missing.yaml"))
