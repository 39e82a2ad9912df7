"""Tiny sweeps: a gradient-matching (IDC) base config on the 300-image Fashion-MNIST look-alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# The TINY run of tests/distill/test_driver.py, as a base YAML (IDC needs no experts: the fastest base).
TINY_BASE = {"method": "idc", "device": "cpu", "model": {"width": 4, "depth": 2},
             "data": {"val_size": 40}, "augment": {"dsa": False},
             "stages": {"num_stages": 2, "ipc": 1, "iterations": 4, "eval_every": 2, "eval_epochs": 2,
                        "checkpoint_every": 2},
             "gm": {"batch_real": 8, "net_updates": 1, "net_reset_every": 3, "factor": 2, "warmup_epochs": 0},
             # the official evaluate_mtt schedule, not the IDC recipe (multistep) that method=idc lays under it
             "eval": {"runs": 1, "epochs": 2, "schedule": "official"}}
GRID_2X2 = {"stages.num_stages": [1, 2], "stages.ipc": [1, 2]}


@pytest.fixture
def tiny_base(tmp_path, tiny_fashion_root) -> Path:
    """A base run config YAML for tiny IDC runs on the on-disk test dataset."""
    data = {**TINY_BASE, "data": {**TINY_BASE["data"], "root": str(tiny_fashion_root)}}
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def write_sweep(tmp_path, tiny_base):
    """``write_sweep(**fields) -> path`` of a sweep YAML on the tiny base (out defaults to tmp/sweep)."""
    def write(**fields) -> Path:
        data = {"base": str(tiny_base), "out": str(tmp_path / "sweep"), **fields}
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write
