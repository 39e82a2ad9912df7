"""Validation checks as Ray tasks score exactly as the in-process check."""

from __future__ import annotations

import pytest
import torch

from pdd_ray.config import ModelConfig
from pdd_ray.distill.validation import ProgressiveValidator
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.parallel.evaluation import ModelSpec
from pdd_ray.parallel.validation import RayValidator
from pdd_ray.synset import Stage

SPEC = ModelSpec(ModelConfig(arch="convnet", width=4, depth=2), (1, 8, 8), 4)


def test_ray_checks_score_as_the_in_process_check(tiny_separable, local_ray):
    data = tiny_separable
    stages = [Stage(data.images[k::20], data.labels[k::20], 0.02 * (k + 1)) for k in range(3)]
    *earlier, candidate = stages
    validator = ProgressiveValidator(earlier, candidate.labels, 1, SPEC.factory("cpu"), (data.images, data.labels),
                                     protocol=EvalProtocol(batch_size=8, epochs=2, seed=7), nets=2, epochs=2)
    remote = RayValidator(validator, SPEC)
    checks = [remote.submit(candidate.images + shift, candidate.lr) for shift in (0.0, 0.5)]  # both in flight
    scores = [check.result() for check in checks]
    assert scores == pytest.approx([validator(candidate.images + s, candidate.lr) for s in (0.0, 0.5)], abs=1e-9)
    assert remote.deferred and checks[0].ready()
