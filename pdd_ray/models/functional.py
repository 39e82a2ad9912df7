"""Run a module on one flat parameter vector: what unrolled (MTT) training differentiates through."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a module's parameters, in the order they are flattened.

    Stored with expert trajectories so a buffer can refuse a model whose
    layout differs.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        """Total number of scalars in the flat vector."""
        return sum(_prod(s) for s in self.shapes)

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        """The layout of ``module.named_parameters()``."""
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, d: dict) -> "ParamLayout":
        """Inverse of ``to_dict``."""
        return cls(tuple(d["names"]), tuple(tuple(s) for s in d["shapes"]))


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def flatten_params(module: nn.Module) -> torch.Tensor:
    """All parameters of ``module`` concatenated into one detached 1-d tensor."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def unflatten(flat: torch.Tensor, layout: ParamLayout) -> dict[str, torch.Tensor]:
    """Views of ``flat`` shaped like each parameter (gradients flow back into ``flat``)."""
    if flat.numel() != layout.numel:
        raise ValueError(f"flat vector has {flat.numel()} elements, layout needs {layout.numel}")
    chunks = torch.split(flat, [_prod(s) for s in layout.shapes])
    return {n: c.view(s) for n, c, s in zip(layout.names, chunks, layout.shapes)}


def load_flat_(module: nn.Module, flat: torch.Tensor) -> nn.Module:
    """Copy a flat vector into ``module``'s parameters in place."""
    torch.nn.utils.vector_to_parameters(flat.detach().to(next(module.parameters()).device), module.parameters())
    return module


class FlatForward:
    """``f(x, flat)`` == ``module(x)`` with its parameters replaced by ``flat``.

    Buffers (batch-norm running stats) are taken from the module as they are;
    the reference unroll uses instance-norm ConvNets, which have none.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.layout = ParamLayout.of(module)

    def __call__(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        params = unflatten(flat, self.layout)
        params.update(dict(self.module.named_buffers()))
        return functional_call(self.module, params, (x,))
