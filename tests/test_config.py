import pytest

from pdd_ray.config import BaselineConfig, EvalConfig, load_config, parse_override, to_dict
from pdd_ray.errors import UserError


def test_yaml_then_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("seed: 3\nselection:\n  ipc: 5\n  method: herding\neval:\n  runs: 2\n")
    cfg = load_config(BaselineConfig, cfg_file, ["selection.ipc=7", "eval.lr=0.05", "data.root=null"])
    assert cfg.seed == 3 and cfg.selection.method == "herding" and cfg.selection.ipc == 7
    assert cfg.eval.runs == 2 and cfg.eval.lr == 0.05 and cfg.data.root is None
    assert to_dict(cfg)["selection"]["ipc"] == 7


def test_numbers_accepted_where_float_expected():
    assert load_config(EvalConfig, None, ["lr=1", "weight_decay=0"]).lr == 1.0
    # YAML 1.1 reads 1e-5 as a string; it must still be a float here
    assert load_config(EvalConfig, None, ["lr=1e-5"]).lr == 1e-5
    with pytest.raises(UserError, match="must be float"):
        load_config(EvalConfig, None, ["lr=fast"])


@pytest.mark.parametrize("override,fragment", [
    ("selection.ipc=-1", "selection.ipc must be >= 1"),
    ("data.dataset=imagenet21k", "unknown dataset 'imagenet21k'"),
    ("model.width=0", "model.width must be >= 1"),
    ("model.arch=vgg", "unknown model 'vgg'"),
    ("eval.mode=shuffled", "eval.mode must be one of"),
    ("selection.ipc=ten", "'selection.ipc' must be int"),
    ("selection.ipc=true", "'selection.ipc' must be int"),
    ("eval.rnus=3", "unknown config key 'eval.rnus'"),
    ("selection.method=coolest", "unknown selection method"),
    ("augment.strategy=color_blur", "blur"),
    ("device=tpu", "device must be"),
    ("noequals", "key=value"),
])
def test_bad_values_fail_before_compute(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config(BaselineConfig, None, [override])


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(BaselineConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(BaselineConfig, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(BaselineConfig, listy)


def test_parse_override_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("x=null") == ("x", None)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("name=abc") == ("name", "abc")


@pytest.mark.parametrize("override,meant", [
    ("stages.ipcc=2", "stages.ipc"),  # a typo in a field
    ("stage.ipc=2", "stages.ipc"),  # a typo in a section name
    ("mtt.lr_imgg=100", "mtt.lr_img"),
    ("experts.recipe.epoch=3", "experts.recipe.epochs"),
])
def test_unknown_key_names_the_closest_known_one(override, meant):
    from pdd_ray.distill.config import DistillConfig
    with pytest.raises(UserError, match=f"unknown config key .*; did you mean '{meant}'\\?$"):
        load_config(DistillConfig, None, [override])


def test_unknown_key_with_nothing_close_lists_the_valid_keys():
    with pytest.raises(UserError, match="unknown config key 'zzzz'; valid keys here: .*selection") as caught:
        load_config(BaselineConfig, None, ["zzzz=1"])
    assert "did you mean" not in str(caught.value)


def test_unknown_key_in_a_yaml_file_gets_the_hint_too(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("selection:\n  ipcc: 5\n")
    with pytest.raises(UserError, match="did you mean 'selection.ipc'"):
        load_config(BaselineConfig, cfg_file)


@pytest.mark.parametrize("item,meant", [("selection.ipc:7", "selection.ipc=7"), ("seed:3", "seed=3")])
def test_override_written_with_a_colon_says_what_was_meant(item, meant):
    with pytest.raises(UserError, match=f"must look like key=value; did you mean '{meant}'"):
        parse_override(item)


@pytest.mark.parametrize("word,following,meant", [
    ("stages.ipc:2", None, "stages.ipc=2"),
    ("stages.ipc:", "2", "stages.ipc=2"),  # stages.ipc: 2, the YAML way
    ("stages.ipc", "2", "stages.ipc=2"),  # stages.ipc 2, the shell-flag way
    ("stages.ipc:", None, "stages.ipc=VALUE"),
    ("s3://bucket/run", None, None),  # a URI is not key:value
    ("inspect", None, None),  # a bare word is not an override
    ("two words:x", None, None),
])
def test_override_hint(word, following, meant):
    from pdd_ray.config import override_hint
    assert override_hint(word, following) == meant


def test_dotted_keys_cover_nested_sections():
    from pdd_ray.config import dotted_keys
    keys = dotted_keys(BaselineConfig)
    assert {"seed", "selection", "selection.ipc", "eval.runs", "data.root"} <= set(keys)
    assert len(keys) == len(set(keys))
