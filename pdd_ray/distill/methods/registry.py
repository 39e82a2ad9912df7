"""The registry of base methods (kept apart from the entries so they can import it)."""

from __future__ import annotations

from pdd_ray.distill.methods.base import BaseMethod
from pdd_ray.registry import Registry

METHODS: Registry[BaseMethod] = Registry("method")


def create_method(name: str) -> BaseMethod:
    """The registered method ``name`` (a UserError listing the choices otherwise)."""
    return METHODS.get(name)
