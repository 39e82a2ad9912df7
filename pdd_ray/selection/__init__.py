"""Coreset baselines: pick ``ipc`` real images per class (random, herding, k-center, forgetting)."""

from pdd_ray.selection import methods  # noqa: F401  (registers the selectors)
from pdd_ray.selection.forgetting import ForgettingTracker, load_scores, save_scores
from pdd_ray.selection.methods import SELECTORS, SelectionContext, select

__all__ = ["SELECTORS", "SelectionContext", "select", "ForgettingTracker", "load_scores", "save_scores"]
