"""The evaluation protocol: train fresh networks on a synthetic set, report test accuracy."""

from pdd_ray.evaluation.protocol import (SCHEDULES, EvalResult, Phase, epochs_run, evaluate_run, evaluate_synthetic,
                                         make_optimizer,
                                         phases_for, train_on_phases)
from pdd_ray.evaluation.recipe import EvalProtocol

__all__ = ["EvalProtocol", "EvalResult", "Phase", "SCHEDULES", "epochs_run", "evaluate_run", "evaluate_synthetic", "make_optimizer",
           "phases_for", "train_on_phases"]
