"""Stage execution, separate from stage assembly: who runs a prepared stage.

The driver assembles a stage (``driver.prepare_stage``: initial S_i, matcher,
validator, settings, fingerprint) and hands it to a runner:

    InProcessStageRunner   the stage loop in this process (one device)
    RayTrainStageRunner    the same loop on ``parallel.workers`` Ray Train workers
                           (``pdd_ray.parallel.trainer``), each assembling the stage itself

Both deliver the same hooks: ``StageHooks.on_iteration(it)``, ``on_step(it, values)``
and ``on_validation(it, accuracy)`` (Ray Train's come from rank 0 through a Ray queue,
a moment later). The job chooses the runner (``create_stage_runner``); the driver
never imports ``parallel/`` and ``parallel/`` never imports the driver.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from pdd_ray.distill.stage import StageOutcome, distill_stage


@dataclass
class StageHooks:
    """What a caller watches while one stage runs (the 0-based stage index is already bound)."""

    on_iteration: Callable[[int], None] | None = None
    on_validation: Callable[[int, float], None] | None = None
    # After each iteration: {"loss", "lr" (None: not learned), "skipped_nonfinite" (so far)}.
    on_step: Callable[[int, dict], None] | None = None


class InProcessStageRunner:
    """Run the stage loop here, on the driver's device."""

    def device(self, device: torch.device) -> torch.device:
        """Where the driver should assemble the stage."""
        return device

    def run(self, config, finished: list, index: int, job, prepare, hooks: StageHooks, progress: bool) -> StageOutcome:
        """Distil stage ``index`` from the assembled ``job``; ``prepare`` is unused here."""
        with _ray_for_checks(config):
            return distill_stage(job.state, job.matcher, job.settings, job.validate, job.checkpoint_path,
                                 hooks.on_iteration, progress, desc=f"stage {index + 1}/{config.stages.num_stages}",
                                 fingerprint=job.fingerprint, on_validation=hooks.on_validation,
                                 on_step=hooks.on_step)


class RayTrainStageRunner:
    """Run the stage on a Ray Train worker group; every worker assembles it with ``prepare``."""

    def device(self, device: torch.device) -> torch.device:
        # The driver's copy only checks data and buffer and gives fingerprint and labels: the CPU will do.
        return torch.device("cpu")

    def run(self, config, finished: list, index: int, job, prepare, hooks: StageHooks, progress: bool) -> StageOutcome:
        from pdd_ray.parallel.trainer import distill_stage_on_workers
        return distill_stage_on_workers(config, finished, index, job, prepare, hooks)


def create_stage_runner(config):
    """The runner ``parallel.workers`` asks for."""
    return RayTrainStageRunner() if config.parallel.workers > 1 else InProcessStageRunner()


def _ray_for_checks(config):
    """A Ray session while validation checks run as Ray tasks (``eval.executor=ray``), else nothing."""
    if config.eval.executor != "ray":
        return contextlib.nullcontext()
    from pdd_ray.cluster import ray_session
    return ray_session(config.address)


__all__ = ["StageHooks", "InProcessStageRunner", "RayTrainStageRunner", "create_stage_runner"]
