"""Where each stage's expert trajectories come from (MTT base): the transition chain.

    stage 1:    expert k starts from a random init and trains on real data
    stage i+1:  expert k starts from snapshot 0 of expert k of stage i (a network
                already trained through U_1 … U_{i-1}), trains on the synthetic union
                U_i = S_1 ∪ … ∪ S_i with stage i's learned lr for ``transition_epochs``,
                then on real data for the epochs matching can use
                (``max_start_epoch + expert_epochs + 1``)

So snapshot 0 of expert k of stage i is a network trained progressively on
U_1, …, U_{i-1}, and stage i matches real-data training from exactly there.

Paths: ``pdd_ray.distill.run_dir.RunDir`` (``experts(i)``, ``partition(i)``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pdd_ray.distill.run_dir import RunDir


def synthetic_dir(config) -> Path:
    """Where the synthetic set of a run lives (``RunDir.synthetic``)."""
    return RunDir.of(config).synthetic


def expert_dir(config, index: int) -> Path:
    """The expert buffer stage ``index`` (0-based) matches against (``RunDir.experts``)."""
    return RunDir.of(config).experts(index)


def partition_file(config, index: int) -> Path:
    """Where the training positions of stage ``index``'s experts are written (``RunDir.partition``)."""
    return RunDir.of(config).partition(index)


def chained(config, index: int) -> bool:
    """True when stage ``index`` has transition experts of its own."""
    return index > 0 and config.stages.transitions


def experts_config(config, index: int, partition: Path | None = None):
    """The ExpertsConfig that builds stage ``index``'s buffer."""
    base = dataclasses.replace(config.experts, out=str(expert_dir(config, index)), device=config.device,
                               address=config.address, data=config.data, model=config.model, augment=config.augment,
                               seed=config.seed + 7919 * index)
    if not chained(config, index):
        return base
    real_epochs = config.mtt.max_start_epoch + config.mtt.expert_epochs + 1  # as the reference's transition
    return dataclasses.replace(base, transition=str(synthetic_dir(config)),
                               transition_from=str(expert_dir(config, index - 1)), track_forgetting=False,
                               recipe=dataclasses.replace(config.experts.recipe, epochs=real_epochs, store_epochs=None),
                               train_positions=str(partition) if partition is not None else None)


def ensure_experts(config, index: int, progress: bool, partition: torch.Tensor | None = None) -> None:
    """Build (or finish) the buffer stage ``index`` needs; a given stage-1 buffer is used as is.

    ``partition``: training positions the stage's experts train on (forgetting curriculum);
    stage 1's experts always see all data, since they are the ones that count forgetting events.
    """
    if index == 0 and config.buffer is not None:
        return
    if index > 0 and not config.stages.transitions:
        return  # every stage reuses the stage-1 experts
    from pdd_ray.experts.buffer import build_buffer
    path = None
    if partition is not None and chained(config, index):
        path = partition_file(config, index)
        _write_positions(path, partition)
    build_buffer(experts_config(config, index, path), progress=progress)


def _write_positions(path: Path, positions: torch.Tensor) -> None:
    from safetensors.torch import save_file
    from pdd_ray.provenance import atomic_write
    atomic_write(path, lambda tmp: save_file({"positions": positions.long().contiguous()}, str(tmp)))
