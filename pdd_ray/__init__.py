"""pdd-ray: Ray-distributed Progressive Dataset Distillation.

From Python: ``pdd_ray.load(dir)`` reads a distilled set (``pdd_ray.api.DistilledSet``) and
``pdd_ray.evaluate(dir_or_set)`` trains fresh networks on it with its run's recorded recipe.
Both are imported on first use, so ``import pdd_ray`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["load", "evaluate", "DistilledSet", "__version__"]


def __getattr__(name: str):
    if name in ("load", "evaluate", "DistilledSet"):
        from pdd_ray import api
        return getattr(api, name)
    raise AttributeError(f"module 'pdd_ray' has no attribute '{name}'")
