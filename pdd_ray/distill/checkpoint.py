"""Stage checkpoints: one safetensors file (tensors + JSON metadata), replaced atomically.

Everything needed to continue a stage bit-for-bit: the images and lr being
optimised, both optimisers' momentum, the RNG state, the best iterate so far,
the matcher's own state and the counters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from pdd_ray.errors import UserError
from pdd_ray.provenance import atomic_write


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and a JSON-able ``meta`` dict into one file, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)}))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) from ``save_checkpoint``."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["meta"])
        return load_file(str(path)), meta
    except Exception as exc:  # a damaged checkpoint should say so, not crash obscurely
        raise UserError(f"cannot read checkpoint {path}: {exc}; delete it to restart the stage") from None


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Momentum buffers of a single-group, single-parameter-per-slot SGD, as named tensors."""
    out = {}
    for i, param in enumerate(optimizer.param_groups[0]["params"]):
        buf = optimizer.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            out[f"{prefix}.{i}"] = buf
    return out


def restore_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of ``optimizer_tensors``."""
    for i, param in enumerate(optimizer.param_groups[0]["params"]):
        key = f"{prefix}.{i}"
        if key in tensors:
            optimizer.state[param]["momentum_buffer"] = tensors[key].to(param.device).clone()
