"""Validation checks as Ray tasks, beside the stage's distillation instead of in its way.

``RayValidator.submit(images, lr)`` hands the candidate to a Ray task and returns at
once; the stage loop keeps distilling and collects the scores in iteration order
(``pdd_ray.distill.stage``), so the best iterate, the history and the checkpoints are
those of the in-process check. The validation nets' starts are trained once, here,
and shipped with the validator in one object-store copy per stage.
"""

from __future__ import annotations

import torch

from pdd_ray.distill.validation import NetState, ProgressiveValidator
from pdd_ray.parallel.evaluation import ModelSpec


def _check_task(validator: ProgressiveValidator, spec: ModelSpec, images: torch.Tensor, lr: float | None,
                threads: int) -> float:
    from pdd_ray.runtime import configure_compute
    configure_compute(threads)
    device = torch.device("cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu")
    return validator.with_model(spec.factory(device))(images, lr)


def _on_cpu(start: NetState) -> NetState:
    return NetState({k: v.cpu() for k, v in start.weights.items()},
                    [None if m is None else m.cpu() for m in start.momentum], start.rng)


class PendingCheck:
    """One submitted check: ``ready()`` without waiting, ``result()`` waiting."""

    def __init__(self, ref):
        self.ref = ref

    def ready(self) -> bool:
        import ray
        done, _ = ray.wait([self.ref], timeout=0)
        return bool(done)

    def result(self) -> float:
        import ray
        return float(ray.get(self.ref))


class RayValidator:
    """A ``ProgressiveValidator`` whose checks run as Ray tasks of ``cpus`` / ``gpus`` each."""

    deferred = True  # the stage loop submits and collects instead of calling

    def __init__(self, validator: ProgressiveValidator, spec: ModelSpec, cpus: float = 1.0, gpus: float = 0.0):
        self.validator, self.spec, self.cpus, self.gpus = validator, spec, cpus, gpus
        self._shared = None

    def __call__(self, images: torch.Tensor, lr: float | None) -> float:
        return self.submit(images, lr).result()

    def submit(self, images: torch.Tensor, lr: float | None) -> PendingCheck:
        import ray
        if self._shared is None:
            starts = self.validator.starts()  # trained (or read from the stage cache) once, before any task
            shared = self.validator.with_model(None)
            shared._starts = [_on_cpu(start) for start in starts]
            self._shared = ray.put(shared)
        task = ray.remote(_check_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=2)
        return PendingCheck(task.remote(self._shared, self.spec, images.detach().cpu(), lr, max(1, int(self.cpus))))


__all__ = ["RayValidator", "PendingCheck"]
