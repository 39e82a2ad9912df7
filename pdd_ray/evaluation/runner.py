"""Who trains the evaluation networks: this process, one run after another (``InProcessRunner``).

An *evaluation* is a set of stages scored on a split (the PDD set on the test split, the
random-real baseline, the sweep's validation score). A runner takes several at once so
that a parallel runner (``pdd_ray.parallel.evaluation.RayRunner``, Ray tasks with
fractional GPUs) can train all their runs side by side. Every run is
``EvalProtocol.evaluate`` of one seed, so a runner changes where a run trains, never
what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pdd_ray.evaluation.protocol import EvalResult
from pdd_ray.evaluation.recipe import EvalProtocol


@dataclass(frozen=True)
class Evaluation:
    """Stages to score on ``split`` (images, labels), under ``protocol`` (its mode and runs by default)."""

    protocol: EvalProtocol
    stages: list
    split: tuple[torch.Tensor, torch.Tensor]
    mode: str | None = None
    runs: int | None = None

    @property
    def run_count(self) -> int:
        return self.protocol.runs if self.runs is None else self.runs

    @property
    def run_mode(self) -> str:
        return self.mode or self.protocol.mode


def evaluate_one_run(evaluation: Evaluation, run: int, make_model: Callable, device=None) -> list[float]:
    """Accuracy after each phase of run ``run`` of ``evaluation`` (the run ``EvalProtocol.evaluate`` seeds
    ``protocol.seed + run``), wherever it is called."""
    protocol = evaluation.protocol.replace(seed=evaluation.protocol.seed + run)
    result = protocol.evaluate(evaluation.stages, evaluation.split, make_model, mode=evaluation.run_mode, runs=1,
                               progress=False, device=device)
    return result.per_run[0]


class InProcessRunner:
    """Train every run here, in order, with ``make_model``'s networks (on their device)."""

    def __init__(self, make_model: Callable, device=None):
        self.make_model, self.device = make_model, device

    def evaluate(self, evaluations: dict[str, Evaluation], progress: bool = True) -> dict[str, EvalResult]:
        """Each evaluation's result, by name."""
        return {name: e.protocol.evaluate(e.stages, e.split, self.make_model, mode=e.run_mode, runs=e.run_count,
                                          progress=progress, device=self.device)
                for name, e in evaluations.items()}


__all__ = ["Evaluation", "InProcessRunner", "evaluate_one_run"]
