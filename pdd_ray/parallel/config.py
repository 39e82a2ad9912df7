"""The ``parallel`` section of a run config: how many data-parallel workers distil a stage, and where."""

from __future__ import annotations

from dataclasses import dataclass

from pdd_ray.errors import UserError

SPLITS = ("items", "batch")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class ParallelConfig:
    """Data-parallel matching with Ray Train (``workers: 1`` keeps the in-process driver).

    ``split: items`` deals an iteration's work items (MTT trajectories, gradient-matching
    classes) round-robin over the workers; ``split: batch`` (MTT with memory_saving) has
    every worker unroll every trajectory on its shard of each synthetic minibatch, which
    divides activation memory by the number of workers.
    """

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # with use_gpu; 0.5 puts two workers on one GPU (reduced through gloo)
    split: str = "items"
    backend: str = "auto"  # gloo on CPU, nccl on GPU
    max_failures: int = 2  # worker-group restarts from the last checkpoint before the run fails
    storage_path: str | None = None  # Ray Train's checkpoint storage (absolute path or URI); default OUT/ray_train
    collective_timeout_s: int = 7200  # workers wait this long in a collective (rank 0 validating, a slow peer)

    def validate(self) -> None:
        """Raise UserError naming the first bad value."""
        if self.workers < 1:
            raise UserError(f"parallel.workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise UserError(f"parallel.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise UserError(f"parallel.gpus_per_worker must be > 0 with use_gpu, got {self.gpus_per_worker}")
        if self.split not in SPLITS:
            raise UserError(f"parallel.split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.backend not in BACKENDS:
            raise UserError(f"parallel.backend must be one of {', '.join(BACKENDS)}, got '{self.backend}'")
        if self.backend == "nccl" and not self.use_gpu:
            raise UserError("parallel.backend=nccl needs parallel.use_gpu=true (NCCL reduces GPU tensors only)")
        if self.backend == "nccl" and self.gpus_per_worker < 1:
            raise UserError("parallel.backend=nccl needs whole GPUs (gpus_per_worker >= 1): NCCL refuses two ranks "
                            "on one GPU; leave backend=auto (gloo) for fractions")
        if self.collective_timeout_s < 1:
            raise UserError(f"parallel.collective_timeout_s must be >= 1, got {self.collective_timeout_s}")
        if self.max_failures < 0:
            raise UserError(f"parallel.max_failures must be >= 0, got {self.max_failures}")

    def resolved_backend(self) -> str:
        """The torch.distributed backend: NCCL on whole GPUs, gloo on CPUs and GPU fractions, unless set."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.use_gpu and self.gpus_per_worker >= 1 else "gloo"
