"""Data-parallel distillation: the communicator the stage loop reduces through, and the Ray Train runner."""

from pdd_ray.parallel.comm import LocalComm, TorchDistComm, all_reduce_contribution, zero_contribution
from pdd_ray.parallel.config import ParallelConfig

__all__ = ["LocalComm", "TorchDistComm", "all_reduce_contribution", "zero_contribution", "ParallelConfig"]
