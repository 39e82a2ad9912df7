"""Evaluation runs as Ray tasks: every run of every evaluation at once, on fractional GPUs or CPU slots.

The final evaluation's runs and the random-real baseline's are independent
networks; on one device they wait for each other, on a cluster (or one GPU with
room for several small nets) they need not. Each task trains one run through
``evaluate_one_run``, the function the in-process runner's loop amounts to, so
the per-run accuracies are the same numbers (``tests/parallel/test_evaluation.py``).

The stages and splits go into the object store once per evaluation; tasks see them
zero-copy on their node. ``cpus_per_run`` / ``gpus_per_run`` are the Ray
resources of one run (``gpus_per_run: 0.25`` packs four nets on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from pdd_ray.evaluation.protocol import EvalResult
from pdd_ray.evaluation.runner import Evaluation, evaluate_one_run
from pdd_ray.models import model_factory


@dataclass(frozen=True)
class ModelSpec:
    """What a task needs to build the evaluation networks itself, on its own device."""

    model: object  # ModelConfig
    image_shape: tuple[int, ...]
    num_classes: int

    def factory(self, device):
        return model_factory(self.model, self.image_shape, self.num_classes, device)


def _run_task(evaluation: Evaluation, run: int, spec: ModelSpec, threads: int) -> list[float]:
    """One run, inside a Ray task: its own device (the GPU Ray assigned, else the CPU) and thread count."""
    import torch
    from pdd_ray.runtime import configure_compute
    configure_compute(threads)
    device = torch.device("cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu")
    return evaluate_one_run(evaluation, run, spec.factory(device), device)


class RayRunner:
    """Submit every run as a Ray task, gather them into the same ``EvalResult``s as ``InProcessRunner``."""

    def __init__(self, spec: ModelSpec, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
        self.spec, self.cpus, self.gpus = spec, cpus_per_run, gpus_per_run

    def evaluate(self, evaluations: dict[str, Evaluation], progress: bool = True) -> dict[str, EvalResult]:
        import ray

        from pdd_ray.progress import progress_bar

        task = ray.remote(_run_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=2)
        threads = max(1, int(self.cpus))
        futures = {}
        for name, evaluation in evaluations.items():
            shared = ray.put(evaluation)  # one copy in the object store for all of its runs
            futures[name] = [task.remote(shared, run, self.spec, threads) for run in range(evaluation.run_count)]
        pending = [f for runs in futures.values() for f in runs]
        with progress_bar(total=len(pending), desc="evaluate (ray tasks)", unit="run", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return {name: EvalResult(evaluations[name].run_mode, ray.get(runs)) for name, runs in futures.items()}


__all__ = ["ModelSpec", "RayRunner"]
