"""DSA as published on two data-parallel workers equals one process (synthetic-data inner network, batch-shared DSA)."""

from __future__ import annotations

from pathlib import Path

import torch

from pdd_ray.augment import DSA, DSAConfig
from pdd_ray.distill.gradient_matching import PRESETS, GradientMatcher
from pdd_ray.parallel import LocalComm
from pdd_ray.parallel.local import run_process_group
from tests.distill import test_gradient_matching as gm_helpers
from tests.parallel.test_data_parallel import _assert_same_update, _run


def dsa_case(comm, checkpoint: str) -> dict:
    """3 matching steps, a fresh network after 2: one epoch-on-the-synthetic-set update and one reset."""
    config = PRESETS["dsa"].replace(batch_real=8, net_reset_every=2, net_updates=2, net_batch=4)
    matcher = GradientMatcher(config, gm_helpers.tiny_real(), gm_helpers.make_model(),
                              augment=DSA(DSAConfig(batch=True)), net_augment=DSA(), comm=comm)
    return _run(comm, matcher, gm_helpers.tiny_state(ipc=2, frozen_ipc=1), Path(checkpoint))


def test_dsa_two_workers_equal_one_process(tmp_path):
    single = dsa_case(LocalComm(), str(tmp_path / "single.ckpt"))
    single["start"] = gm_helpers.tiny_state(ipc=2, frozen_ipc=1).images.detach()
    workers = run_process_group(2, dsa_case, str(tmp_path / "workers.ckpt"))
    _assert_same_update(single, workers)
    assert torch.isfinite(single["images"]).all()
