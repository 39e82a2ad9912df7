"""Image augmentation for distillation: Differentiable Siamese Augmentation (DSA)."""

from pdd_ray.augment.dsa import DSA, MODES, OPS, DSAConfig, DSAParams, make_augment

__all__ = ["DSA", "DSAConfig", "DSAParams", "MODES", "OPS", "make_augment"]
