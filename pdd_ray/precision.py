"""Compute precision: ``fp32``, ``bf16`` (autocast over fp32 master values) or ``auto``.

``bf16`` runs convolutions and matmuls in bfloat16 under ``torch.autocast`` while
every parameter, image, learned lr, optimiser state and the MTT loss stay fp32:
autocast casts a weight to bf16 where an op uses it and the cast's backward
brings the gradient back to fp32, so second-order MTT gradients accumulate in
fp32 and only the products inside each conv/matmul are rounded to bf16's 8 bits
of mantissa.

``auto`` picks ``bf16`` only where the hardware does bf16 products natively:

* CPU: the ``amx_bf16`` (Intel AMX tiles) or ``avx512_bf16`` instruction flags;
* CUDA: compute capability 8.0 or newer (tensor cores with bf16, Ampere on).

Elsewhere bf16 is emulated and slower than fp32, so ``auto`` is ``fp32`` there.
A run resolves ``auto`` once, records what it chose, and a resumed run keeps it
(``pdd_ray.distill.run_dir.RunDir.precision``), whatever machine it resumes on.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from pdd_ray.errors import UserError
from pdd_ray.provenance import write_json

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16")
FAST_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags the kernel reports for this CPU (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_fast_bf16(device: torch.device | str, flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` multiplies bf16 natively (``flags``: the CPU's, read from /proc/cpuinfo when None)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        return any(f in flags for f in FAST_CPU_FLAGS)
    return False


def check_precision(setting: str, where: str = "precision") -> None:
    """A UserError unless ``setting`` is one of ``PRECISIONS``."""
    if setting not in PRECISIONS:
        raise UserError(f"{where} must be one of {', '.join(PRECISIONS)}, got '{setting}'")


def resolve_precision(setting: str, device: torch.device | str, flags: frozenset[str] | None = None) -> str:
    """``fp32`` or ``bf16`` for ``setting`` on ``device`` (``auto``: bf16 where ``has_fast_bf16``)."""
    check_precision(setting)
    if setting == "auto":
        return "bf16" if has_fast_bf16(device, flags) else "fp32"
    return setting


def settle_precision(setting: str, device: torch.device | str, record: str | Path) -> str:
    """The precision a run computes in: what ``record`` (a JSON file in the run directory) says, else
    ``setting`` resolved on ``device``. Writes nothing: ``record_precision`` does, once compute starts,
    so a run refused before any compute leaves no file behind.

    A resumed run keeps the precision it started with, whatever machine it resumes on: ``auto``
    takes the recorded one; an explicit setting that differs from it is a user error (the images
    so far were made in the other precision).
    """
    check_precision(setting)
    recorded = recorded_precision(record)
    if recorded is None:
        return resolve_precision(setting, device)
    if setting not in ("auto", recorded):
        raise UserError(f"this run was started with precision={recorded} ({record}); precision={setting} would "
                        f"mix precisions in one run: use precision={recorded} (or auto), or a new out=")
    return recorded


def recorded_precision(record: str | Path) -> str | None:
    """The precision ``record`` names; None when there is no record; a UserError when it names none."""
    record = Path(record)
    if not record.is_file():
        return None
    try:
        recorded = json.loads(record.read_text()).get("precision")
    except (ValueError, AttributeError, OSError):
        recorded = None
    if recorded not in RESOLVED:
        raise UserError(f"{record} does not name a precision ({', '.join(RESOLVED)}); delete it to resolve "
                        f"the precision setting again")
    return recorded


def record_precision(record: str | Path, precision: str, device: torch.device | str) -> None:
    """Write ``record`` for a resolved ``precision`` unless it exists (a resume keeps the first one)."""
    if precision not in RESOLVED:
        raise ValueError(f"only a resolved precision is recorded, got '{precision}'")
    record = Path(record)
    if record.is_file():
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"precision": precision, "device": str(device), "fast_bf16": has_fast_bf16(device),
                        "describe": describe(precision)})


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs under: ``torch.autocast`` to bf16, or nothing for fp32."""
    if precision not in RESOLVED:
        raise ValueError(f"precision must be resolved to one of {RESOLVED} before compute, got '{precision}'")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def describe(precision: str) -> str:
    """The precision in words, for result files and reports."""
    if precision == "bf16":
        return "bf16 autocast (convolutions and matmuls in bfloat16; parameters, images, losses, optimiser in fp32)"
    return "fp32 throughout"


__all__ = ["PRECISIONS", "autocast", "check_precision", "cpu_flags", "describe", "has_fast_bf16",
           "record_precision", "recorded_precision", "resolve_precision", "settle_precision"]
