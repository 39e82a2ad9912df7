"""Where each stage's expert trajectories come from (MTT base): the transition chain.

    stage 1:    expert k starts from a random init and trains on real data
    stage i+1:  expert k starts from snapshot 0 of expert k of stage i (a network
                already trained through U_1 … U_{i-1}), trains on the synthetic union
                U_i = S_1 ∪ … ∪ S_i with stage i's learned lr for ``transition_epochs``,
                then on real data for the epochs matching can use
                (``max_start_epoch + expert_epochs + 1``)

So snapshot 0 of expert k of stage i is a network trained progressively on
U_1, …, U_{i-1}, and stage i matches real-data training from exactly there.

Stage-1 experts train only the epochs matching reads (``read_epochs``) unless they
count forgetting events, which need every epoch of the recipe. With ``experts.keep: last``
a stage's buffer is deleted once the next stage's is complete: a finished stage never
reads its buffer again, and the next buffer records everything it took from it.

Paths: ``pdd_ray.distill.run_dir.RunDir`` (``experts(i)``, ``partition(i)``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from pdd_ray.distill.run_dir import RunDir

log = logging.getLogger(__name__)
_warned: set[str] = set()


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


def read_epochs(config) -> int:
    """The last real-data epoch whose snapshot matching reads: start < max_start_epoch, target start + expert_epochs
    (the matcher asks for snapshots 0..max_start_epoch + expert_epochs)."""
    return config.mtt.max_start_epoch + config.mtt.expert_epochs


def experts_config(config, index: int, partition: Path | None = None, reads: int | None = None):
    """The ExpertsConfig that builds stage ``index``'s buffer.

    ``reads``: the last epoch any user of a stage-1 buffer matches against (default ``read_epochs``;
    a sweep passes the largest over its trials, which share one buffer).
    """
    base = dataclasses.replace(config.experts, out=str(expert_dir(config, index)), device=config.device,
                               address=config.address, data=config.data, model=config.model, augment=config.augment,
                               seed=config.seed + 7919 * index)
    if not chained(config, index):
        return _trimmed(base, read_epochs(config) if reads is None else reads)
    real_epochs = config.mtt.max_start_epoch + config.mtt.expert_epochs + 1  # as the reference's transition
    return dataclasses.replace(base, transition=str(synthetic_dir(config)),
                               transition_from=str(expert_dir(config, index - 1)), track_forgetting=False,
                               recipe=dataclasses.replace(config.experts.recipe, epochs=real_epochs, store_epochs=None),
                               train_positions=str(partition) if partition is not None else None)


def _trimmed(experts, reads: int):
    """Stage-1 experts training ``reads`` epochs when the recipe asks for more and nothing else needs them.

    Forgetting counts need every epoch of the recipe; a buffer already begun with the full recipe is
    finished with it (its recorded recipe must match).
    """
    recipe = experts.recipe
    if recipe.epochs <= reads or experts.track_forgetting:
        return experts
    from pdd_ray.experts.buffer import recorded_recipe
    if recorded_recipe(experts.out).get("epochs") == recipe.epochs:
        return experts
    return dataclasses.replace(experts, recipe=dataclasses.replace(recipe, epochs=reads))


def warn_unread_epochs(config) -> None:
    """Say once, before compute, when stage-1 experts would train epochs matching never reads."""
    recipe = config.experts.recipe
    reads = read_epochs(config)
    if config.buffer is not None or recipe.epochs <= reads:
        return
    if config.experts.track_forgetting:
        message = (f"experts.recipe.epochs={recipe.epochs} but matching reads epochs 0..{reads} only; the stage-1 "
                   f"experts still train all {recipe.epochs} (experts.track_forgetting counts events in every "
                   f"epoch): set experts.recipe.epochs={reads} if the scores may come from fewer")
    else:
        message = (f"experts.recipe.epochs={recipe.epochs} but matching reads epochs 0..{reads} only: the stage-1 "
                   f"experts train {reads} epochs (their final test accuracy is only a report)")
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def ensure_experts(config, index: int, progress: bool, partition: torch.Tensor | None = None, data=None,
                   finished: list | None = None) -> None:
    """Build (or finish) the buffer stage ``index`` needs; a given stage-1 buffer is used as is.

    ``partition``: training positions the stage's experts train on (forgetting curriculum);
    stage 1's experts always see all data, since they are the ones that count forgetting events.
    ``data`` / ``finished``: the run's DataBundle and finished stages, in memory, so the builder
    neither loads the dataset nor reads the synthetic set again (None: it loads them itself).
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
    experts = experts_config(config, index, path)
    if experts.transition_from is not None and not Path(experts.transition_from).exists() \
            and _complete(experts.out, experts.num_experts):
        return  # keep: last deleted the previous buffer after this one was complete: nothing left to build
    synthetic = list(finished[:index]) if finished is not None and chained(config, index) else None
    build_buffer(experts, progress=progress, data=data, synthetic=synthetic)
    if chained(config, index) and config.experts.keep == "last":
        drop_buffer(config, index - 1)


def drop_buffer(config, index: int) -> None:
    """``experts.keep: last``: delete stage ``index``'s buffer, unless it is a given buffer or its
    forgetting scores still decide later stages' partitions."""
    if index == 0 and (config.buffer is not None or config.stages.forgetting_curriculum):
        return
    paths = RunDir.of(config)
    directory = paths.experts(index)
    if directory.parent != paths.root / "experts":  # only ever a buffer this run built itself
        return
    shutil.rmtree(directory, ignore_errors=True)
    log.info("experts.keep=last: deleted %s (stage %d is finished)", directory, index + 1)


def _complete(directory: str, num_experts: int) -> bool:
    from pdd_ray.trajectories import TrajectoryStore
    if not (Path(directory) / "manifest.json").is_file():
        return False
    with TrajectoryStore.open(directory) as store:
        return not store.missing(num_experts)


def _write_positions(path: Path, positions: torch.Tensor) -> None:
    from safetensors.torch import save_file
    from pdd_ray.provenance import atomic_write
    atomic_write(path, lambda tmp: save_file({"positions": positions.long().contiguous()}, str(tmp)))
