"""Expert trajectories: networks trained on real data with a parameter snapshot per epoch."""

from pdd_ray.experts.train import ExpertResult, ExpertRecipe, train_expert

__all__ = ["ExpertRecipe", "ExpertResult", "train_expert"]
