"""Build every unfinished (builder, phase) memory: here one after another, or as parallel Ray tasks.

Phases are independent until evaluation: each memory depends only on its own
phase's classes, so with ``executor: ray`` every unfinished one is a Ray task
(``cpus_per_task`` / ``gpus_per_task``) that loads the dataset on its node, cuts
the phase's bundle and calls the same ``build_memory`` as the in-process path,
seeded the same way: the same memories either way. A task's expert training
(MTT) submits its experts as nested tasks of the same Ray cluster. A killed run
keeps every finished memory; the next run builds only the others.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from pdd_ray.continual.config import ContinualConfig
from pdd_ray.continual.memory import build_memory, is_finished
from pdd_ray.continual.split import PhaseSplit
from pdd_ray.errors import UserError, user_error_in


def unfinished(config: ContinualConfig, split: PhaseSplit) -> list[tuple[int, int]]:
    """(builder index, phase) of every memory still to build, phase by phase."""
    return [(b, t) for t in range(len(split.phases)) for b, builder in enumerate(config.builders)
            if not is_finished(config, builder, split, t)]


def build_all(config: ContinualConfig, split: PhaseSplit, data, device: torch.device, progress: bool = True) -> int:
    """Build the unfinished memories with ``config.executor``; returns how many were built."""
    todo = unfinished(config, split)
    if not todo:
        return 0
    if config.executor == "ray":
        _build_as_tasks(config, split, todo, progress)
        return len(todo)
    with _ray_for_experts(config):
        for b, t in tqdm(todo, desc="memories", disable=not progress):
            build_memory(config, config.builders[b], split, t, data, device, progress)
    return len(todo)


def _ray_for_experts(config: ContinualConfig):
    """One Ray session for every expert buffer of the run (not one started and stopped per buffer)."""
    from contextlib import nullcontext

    from pdd_ray.cluster import ray_session
    needs = any(not b.is_coreset and config.run_config(b).base.needs_experts for b in config.builders)
    return ray_session(config.address) if needs else nullcontext()


def _build_as_tasks(config: ContinualConfig, split: PhaseSplit, todo: list[tuple[int, int]], progress: bool) -> None:
    import ray

    from pdd_ray.cluster import ray_session

    config = for_tasks(config)
    with ray_session(config.address):
        task = ray.remote(_build_task).options(num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task,
                                               max_retries=0)
        threads = max(1, int(config.cpus_per_task))
        pending = [task.remote(config, split, b, t, threads) for b, t in todo]
        failures = []
        with tqdm(total=len(pending), desc="memories (ray tasks)", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failures.append(exc)
                bar.update(len(done))
    if failures:
        # Finished memories are on disk; the user's one line if a task hit a UserError.
        raise user_error_in(failures[0]) or UserError(
            f"{len(failures)} memory task(s) failed (finished ones are kept; rerun to resume): "
            f"{str(failures[0]).splitlines()[0]}")


def _build_task(config: ContinualConfig, split: PhaseSplit, builder: int, phase: int, threads: int) -> None:
    """Body of one Ray task: the phase's memory, built where the task runs."""
    from pdd_ray.data.bundle import create_dataset
    from pdd_ray.train.loop import resolve_device
    from pdd_ray.runtime import configure_compute
    configure_compute(threads)
    device = resolve_device(config.device if config.gpus_per_task > 0 else "cpu")
    build_memory(config, config.builders[builder], split, phase, create_dataset(config.data), device)


def for_tasks(config: ContinualConfig) -> ContinualConfig:
    """The config with absolute paths: a task may run in another directory, or on another node."""
    from pathlib import Path
    root = config.data.root
    return dataclasses.replace(config, out=str(Path(config.out).resolve()),
                               data=dataclasses.replace(config.data, root=str(Path(root).expanduser().resolve())
                                                        if root else root))


__all__ = ["build_all", "for_tasks", "unfinished"]
