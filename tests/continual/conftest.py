"""Tiny continual runs: 10-class Fashion-MNIST look-alikes, 5 phases of 2 classes, tiny networks."""

from __future__ import annotations

import pytest

from pdd_ray.config import load_config
from pdd_ray.continual.config import ContinualConfig

TINY = ["data.val_size=40", "device=cpu", "augment.dsa=false", "model.width=4", "model.depth=2", "memory.ipc=2",
        "phases.num_phases=5", "eval.runs=2", "eval.epochs=2", "selection.epochs=1", "selection.width=4",
        "distill.stages.iterations=2", "distill.stages.eval_every=1", "distill.stages.eval_epochs=1",
        "distill.stages.val_nets=1", "distill.stages.checkpoint_every=1", "distill.gm.net_reset_every=1"]
# A real distillation without experts (gradient matching, no Ray) and a coreset.
DC_AND_RANDOM = "builders=[{method: dc, stages: 2}, {method: random}]"


@pytest.fixture
def make_config(tiny_fashion_root, tmp_path):
    """``make_config(*overrides)``: a tiny ContinualConfig on the look-alike data, out in tmp_path/run."""
    def make(*overrides: str, out: str = "run") -> ContinualConfig:
        return load_config(ContinualConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / out}",
                                                   *TINY, DC_AND_RANDOM, *overrides])
    return make
