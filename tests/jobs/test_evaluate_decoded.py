"""``pdd-ray evaluate`` on a multi-formation set trains on, and records, the decoded images."""

import torch

from pdd_ray.evaluation.protocol import phases_for
from pdd_ray.jobs.evaluate import _stage_entry
from pdd_ray.synset import Stage


def test_evaluation_sees_factor_squared_images_per_stored_image():
    stage = Stage(torch.randn(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), None, {"factor": 2})
    (phase,) = phases_for([stage], "union", epochs=1)
    assert len(phase.labels) == 24 and phase.labels.tolist()[:4] == [0, 0, 0, 0]
    entry = _stage_entry(stage)
    assert (entry["count"], entry["factor"], entry["decoded_count"]) == (6, 2, 24)
