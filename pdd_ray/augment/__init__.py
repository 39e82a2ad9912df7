"""Image augmentation for distillation: Differentiable Siamese Augmentation (DSA)."""

from pdd_ray.augment.dsa import DSA, MODES, OPS, DSAConfig, DSAParams

__all__ = ["DSA", "DSAConfig", "DSAParams", "MODES", "OPS"]
