"""Base distillation methods, one registry: ``create_method("mtt")``.

Each entry lives in its own module and registers itself; importing this package
registers them all.
"""

from __future__ import annotations

from pdd_ray.distill.methods.base import BaseMethod, MatcherContext
from pdd_ray.distill.methods.registry import METHODS, create_method
from pdd_ray.distill.methods import gradient_matching, mtt  # noqa: F401  (registers the entries)

__all__ = ["BaseMethod", "MatcherContext", "METHODS", "create_method"]
