"""The evaluation protocol: train fresh networks on a synthetic set, report test accuracy."""

from pdd_ray.evaluation.protocol import EvalResult, Phase, evaluate_synthetic, phases_for, train_on_phases

__all__ = ["EvalResult", "Phase", "evaluate_synthetic", "phases_for", "train_on_phases"]
