"""Evaluation runs as Ray tasks give the in-process runner's numbers."""

from __future__ import annotations

import pytest
import torch

from pdd_ray.augment.dsa import DSA
from pdd_ray.config import ModelConfig
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.evaluation.runner import Evaluation, InProcessRunner, evaluate_one_run
from pdd_ray.parallel.evaluation import ModelSpec, RayRunner
from pdd_ray.synset import Stage

SPEC = ModelSpec(ModelConfig(arch="convnet", width=4, depth=2), (1, 8, 8), 4)


def _evaluations(data) -> dict[str, Evaluation]:
    protocol = EvalProtocol(runs=2, epochs=2, batch_size=8, seed=3, augment=DSA())
    stages = [Stage(data.images[i::12], data.labels[i::12], 0.02 * (i + 1)) for i in range(2)]
    split = (data.images, data.labels)
    return {"pdd": Evaluation(protocol, stages, split),
            "baseline": Evaluation(protocol.with_budget(6), [Stage(data.images[5::7], data.labels[5::7])], split,
                                   runs=3)}


def test_one_run_is_run_j_of_the_protocol(tiny_separable):
    evaluation = _evaluations(tiny_separable)["pdd"]
    make_model = SPEC.factory("cpu")
    whole = evaluation.protocol.evaluate(evaluation.stages, evaluation.split, make_model, progress=False)
    assert [evaluate_one_run(evaluation, j, make_model) for j in range(2)] == whole.per_run


def test_ray_tasks_give_the_in_process_results(tiny_separable, local_ray):
    evaluations = _evaluations(tiny_separable)
    here = InProcessRunner(SPEC.factory("cpu")).evaluate(evaluations, progress=False)
    remote = RayRunner(SPEC, cpus_per_run=1).evaluate(evaluations, progress=False)
    assert set(remote) == {"pdd", "baseline"}
    for name in evaluations:
        assert remote[name].mode == here[name].mode
        assert len(remote[name].per_run) == len(here[name].per_run)
        for ours, theirs in zip(remote[name].per_run, here[name].per_run):
            assert ours == pytest.approx(theirs, abs=1e-6)
    assert len(remote["baseline"].per_run) == 3 and len(remote["pdd"].per_run[0]) == 2
