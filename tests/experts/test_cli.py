from pathlib import Path

import pytest
import torch

from pdd_ray.cli import main
from pdd_ray.config import load_config
from pdd_ray.experts.buffer import ExpertsConfig
from pdd_ray.models import ParamLayout, create_model
from pdd_ray.trajectories import TrajectoryStore

CONFIGS = sorted((Path(__file__).parents[2] / "tune_configs").glob("experts_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_expert_recipes_validate(path):
    config = load_config(ExpertsConfig, path)
    assert config.num_experts == 100 and config.recipe.lr == 0.01


def _store(tmp_path):
    layout = ParamLayout.of(create_model("convnet", 1, 3, 8, width=4, depth=2))
    store = TrajectoryStore.create(tmp_path / "buf", dataset="fashion_mnist", preprocessing={}, model={},
                                   layout=layout, recipe={}, num_snapshots=3)
    for i in range(2):
        store.write_expert(i, torch.randn(3, layout.numel), {"init": "random", "test_accuracy": 0.5 + i / 10})
    store.close()
    return tmp_path / "buf"


def test_inspect_prints_a_row_per_expert(tmp_path, capsys):
    directory = _store(tmp_path)
    assert main(["experts", "inspect", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "60.00" in out and "2 expert(s)" in out


def test_inspect_verify_fails_on_corruption(tmp_path, capsys):
    directory = _store(tmp_path)
    victim = directory / "expert_00001.arrow"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["experts", "inspect", str(directory), "--verify"]) == 1
    assert "problem" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["experts", "--config", "default", "num_experts=0"], "num_experts must be >= 1"),
    (["experts", "--config", "default", "dtype=int8"], "dtype must be"),
    (["experts", "inspect"], "usage"),
    (["experts", "inspect", "/nonexistent"], "manifest"),
    (["experts", "trian"], "unexpected argument"),
    (["experts", "--config", "default", "transition=/nonexistent"], "no manifest.json"),
])
def test_experts_user_errors(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
