import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pdd_ray.cli import main

TINY = ["model.width=8", "selection.width=8", "eval.runs=1", "eval.epochs=2", "data.val_size=40"]


@pytest.mark.parametrize("argv,fragment", [
    (["baseline", "--ipc", "-3"], "selection.ipc must be >= 1"),
    (["baseline", "--dataset", "mnist-ish"], "unknown dataset"),
    (["baseline", "model.width=0"], "model.width must be >= 1"),
    (["baseline", "--method", "best"], "unknown selection method"),
    (["baseline", "--config", "/nonexistent.yaml"], "config file not found"),
    (["evaluate", "/nonexistent/dir"], "no manifest.json"),
    (["export", "/nonexistent/dir"], "no manifest.json"),
    (["run", "--config", "default", "--workers", "0"], "parallel.workers must be >= 1"),
    (["run", "--config", "default", "--workers", "2", "parallel.split=batch", "method=idc"],
     "split=batch is for method=mtt"),
])
def test_user_mistakes_give_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_data_says_where_it_looked(tmp_path, capsys):
    assert main(["baseline", "--data-root", str(tmp_path / "nothing"), "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err


def test_console_script_error_has_no_traceback():
    res = subprocess.run([sys.executable, "-m", "pdd_ray", "baseline", "--ipc", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "ipc" in res.stderr


def test_baseline_evaluate_export_round(tmp_path, tiny_fashion_root, capsys):
    out = tmp_path / "set"
    assert main(["baseline", "--data-root", str(tiny_fashion_root), "--ipc", "2", "--out", str(out),
                 "--device", "cpu", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "convnet/progressive" in printed and "±" in printed
    assert main(["evaluate", str(out), "--mode", "union", "--runs", "1", "--epochs", "1", "--device", "cpu",
                 "model.width=4"]) == 0
    assert "convnet/union" in json.loads((out / "eval.json").read_text())
    assert main(["export", str(out), "--to", "parquet"]) == 0
    assert (out / "synthetic.parquet").is_file()


def test_data_info_and_verify(tiny_fashion_root, capsys):
    assert main(["data", "info", "--data-root", str(tiny_fashion_root)]) == 0
    assert "fashion_mnist" in capsys.readouterr().out
    # the tiny copy has 300 training images, not 60000: verify must say so and fail
    assert main(["data", "verify", "--data-root", str(tiny_fashion_root)]) == 1
    assert "problem" in capsys.readouterr().out


# ---------------------------------------------------------------- --config for the long training commands

@pytest.fixture
def no_training(monkeypatch):
    """Training that fails the test at once if a command gets as far as starting it."""
    import pdd_ray.experts.buffer
    import pdd_ray.jobs.run

    def started(*args, **kwargs):
        raise AssertionError("the training job started")
    monkeypatch.setattr(pdd_ray.jobs.run, "run_pdd", started)
    monkeypatch.setattr(pdd_ray.experts.buffer, "build_buffer", started)


@pytest.mark.parametrize("argv,recipe", [
    (["run"], "tune_configs/quickstart_fashion_mnist.yaml"),
    (["run", "--out", "somewhere", "stages.ipc=1"], "tune_configs/quickstart_fashion_mnist.yaml"),
    (["distill", "--out", "somewhere"], "tune_configs/quickstart_fashion_mnist.yaml"),
    (["experts", "--out", "somewhere", "num_experts=1"], "tune_configs/experts_fashion_mnist.yaml"),
])
def test_training_without_config_is_refused_in_one_line_writing_nothing(argv, recipe, tmp_path, monkeypatch, capsys,
                                                                          no_training):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--config is needed" in err and recipe in err and "--config default" in err
    assert list(tmp_path.iterdir()) == []


def test_config_default_means_the_built_in_defaults(no_training, capsys):
    # It gets past the --config check to the config itself (a bad value there is its usual one line).
    assert main(["run", "--config", "default", "stages.ipc=0"]) == 2
    assert "stages.ipc must be >= 1" in capsys.readouterr().err
    assert main(["experts", "--config", "default", "num_experts=0"]) == 2
    assert "num_experts must be >= 1" in capsys.readouterr().err


def test_experts_inspect_needs_no_config(tmp_path, capsys):
    assert main(["experts", "inspect", str(tmp_path / "none")]) == 2
    assert "--config" not in capsys.readouterr().err


# ---------------------------------------------------------------- --version and help

def test_version_prints_the_package_version():
    import pdd_ray
    res = subprocess.run([sys.executable, "-m", "pdd_ray", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"pdd-ray {pdd_ray.__version__}"


def test_version_and_parsing_do_not_import_the_registries():
    # The choices in --help come from registries that import torch: only printing help may load them.
    code = ("import sys; from pdd_ray.cli import build_parser;"
            "build_parser().parse_known_args(['run', '--method', 'mtt']); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def _help(command: str) -> str:
    from pdd_ray.cli import build_parser
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[command].format_help()


def _registry(module: str, name: str) -> list[str]:
    import importlib
    return getattr(importlib.import_module(module), name).names()


@pytest.mark.parametrize("command,flag,names", [
    ("baseline", "--dataset", lambda: _registry("pdd_ray.data.registry", "DATASETS")),
    ("baseline", "--method", lambda: _registry("pdd_ray.selection", "SELECTORS")),
    ("run", "--method", lambda: _registry("pdd_ray.distill.methods", "METHODS")),
    ("distill", "--dataset", lambda: _registry("pdd_ray.data.registry", "DATASETS")),
    ("experts", "--device", lambda: ["auto", "cpu", "cuda", "cuda:N"]),
    ("evaluate", "--arch", lambda: _registry("pdd_ray.models", "MODELS")),
    ("evaluate", "--mode", lambda: ["progressive", "union", "sequential"]),
    ("export", "--to", lambda: ["parquet", "pt", "folder"]),
    ("data", "--dataset", lambda: _registry("pdd_ray.data.registry", "DATASETS")),
    ("config", "--kind", lambda: ["run", "experts", "continual", "sweep", "baseline"]),
    ("sweep", "--log-level", lambda: ["debug", "info", "warning", "error"]),
])
def test_help_names_each_flags_choices(command, flag, names):
    assert f"{flag} {{{','.join(names())}}}" in _help(command)


def test_every_shorthand_flag_says_which_config_key_it_sets():
    from pdd_ray.cli import CONFIG_FLAGS
    for command, flags in CONFIG_FLAGS.items():
        text = " ".join(_help(command).split())  # argparse wraps help lines
        for key in flags.values():
            assert f"sets {key}" in text, (command, key)


def test_a_bad_choice_is_still_the_configs_one_line(capsys):
    assert main(["run", "--config", "default", "--method", "best"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown method 'best'; choose one of" in err


# ---------------------------------------------------------------- config show

REPO = Path(__file__).resolve().parents[1]


def _show(capsys, *argv) -> tuple[str, dict]:
    assert main(["config", "show", *argv]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0], yaml.safe_load(out)


def test_config_show_prints_what_the_run_would_use_and_it_loads_back(tmp_path, capsys):
    from pdd_ray.config import load_config, to_dict
    from pdd_ray.distill.config import DistillConfig
    recipe = REPO / "tune_configs" / "quickstart_fashion_mnist.yaml"
    header, shown = _show(capsys, str(recipe), "stages.ipc=3", "method=idc")
    assert "run config (DistillConfig)" in header
    expected = load_config(DistillConfig, recipe, ["stages.ipc=3", "method=idc"])
    assert shown["stages"]["ipc"] == 3 and shown["gm"] == to_dict(expected.gm)  # idc's preset, applied
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(shown))
    assert load_config(DistillConfig, resolved) == expected


@pytest.mark.parametrize("recipe,kind", [("experts_fashion_mnist.yaml", "experts config (ExpertsConfig)"),
                                         ("continual_fashion_mnist.yaml", "continual config (ContinualConfig)"),
                                         ("sweep_lr_img_syn_steps.yaml", "sweep config (SweepConfig)")])
def test_config_show_knows_each_commands_config(recipe, kind, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    header, shown = _show(capsys, str(REPO / "tune_configs" / recipe))
    assert kind in header and isinstance(shown, dict)


def test_config_show_default_and_kind(capsys):
    from pdd_ray.config import BaselineConfig, load_config, to_dict
    from pdd_ray.distill.config import DistillConfig
    assert _show(capsys, "default")[1] == to_dict(load_config(DistillConfig))
    assert _show(capsys, "default", "--kind", "baseline")[1] == to_dict(BaselineConfig())
    # run configs have no selection section, continual ones no evaluate switch: only a baseline has both
    header, shown = _show(capsys, "default", "selection.ipc=4", "evaluate=false")
    assert "baseline config" in header and shown["selection"]["ipc"] == 4


@pytest.mark.parametrize("argv,fragment", [
    (["config", "show", "/nonexistent.yaml"], "config file not found"),
    (["config", "show", "default", "stages.ipc=0"], "stages.ipc must be >= 1"),
    (["config", "show", "default", "stages.ipcc=2"], "did you mean 'stages.ipc'?"),
    (["config", "show", "default", "--kind", "experts", "num_experts=0"], "num_experts must be >= 1"),
    # a sweep is shown only when every trial's run config is valid, as `pdd-ray sweep` checks before Ray starts
    (["config", "show", str(REPO / "tune_configs" / "sweep_lr_img_syn_steps.yaml"), "grid.stages.ipc=[0]"],
     "stages.ipc must be >= 1"),
])
def test_config_show_mistakes_are_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""


# ---------------------------------------------------------------- did you mean

@pytest.mark.parametrize("argv,fragment", [
    (["run", "--config", "default", "stages.ipc", "2"], "did you mean stages.ipc=2?"),
    (["run", "--config", "default", "stages.ipc:2"], "did you mean stages.ipc=2?"),
    (["run", "--config", "default", "stages.ipc:", "2"], "did you mean stages.ipc=2?"),
    (["baseline", "selection.ipc", "4"], "did you mean selection.ipc=4?"),
    (["experts", "--config", "default", "recipe.epochs", "3"], "did you mean recipe.epochs=3?"),
    (["experts", "recipe.epochs:3"], "did you mean recipe.epochs=3?"),
    (["run", "--config", "default", "stages.ipcc=2"], "unknown config key 'stages.ipcc'; did you mean 'stages.ipc'?"),
])
def test_did_you_mean(argv, fragment, capsys, no_training):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_run_directory_where_its_synthetic_set_is_meant(command, tmp_path, capsys):
    from tests.test_hardening import _tiny_set
    _tiny_set(tmp_path / "run" / "synthetic")
    assert main([command, str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"did you mean {tmp_path / 'run' / 'synthetic'}?" in err and len(err.strip().splitlines()) == 1


def test_no_synthetic_hint_when_the_subdirectory_is_not_a_set_either(tmp_path, capsys):
    (tmp_path / "run" / "synthetic").mkdir(parents=True)
    (tmp_path / "run" / "synthetic" / "manifest.json").write_text('{"format": "something else"}')
    assert main(["export", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "did you mean" not in err


# ---------------------------------------------------------------- data info

def test_data_info_for_a_dataset_not_on_disk_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "info", "--data-root", str(tmp_path / "nothing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "fashion_mnist data not found" in captured.err and str(tmp_path / "nothing") in captured.err
