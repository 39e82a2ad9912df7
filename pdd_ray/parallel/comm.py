"""How data-parallel workers talk: an all-reduce of the iteration gradient and a broadcast of one number.

``LocalComm`` is the single-process case (world of one: every call is the
identity), so the stage loop has one code path. ``TorchDistComm`` uses the
``torch.distributed`` process group that Ray Train (or a test) set up: gloo
on CPU, NCCL on GPU. Both keep the seconds spent communicating, which is
how ``benchmarks/parallel.py`` reports the communication share of an iteration.
"""

from __future__ import annotations

import time
from typing import Sequence, TypeVar

import torch

from pdd_ray.distill.base import Contribution

T = TypeVar("T")


class LocalComm:
    """A world of one worker: nothing to exchange."""

    rank = 0
    world_size = 1
    seconds = 0.0

    def share(self, items: Sequence[T]) -> list[T]:
        """This worker's work items: all of them."""
        return list(items)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over workers, in place: the tensor itself."""
        return tensor

    def broadcast_float(self, value: float | None) -> float:
        """Rank 0's value on every worker."""
        return float(value)


class TorchDistComm(LocalComm):
    """The default ``torch.distributed`` process group (must already be initialised)."""

    def __init__(self, device: torch.device | str = "cpu"):
        import torch.distributed as dist
        if not dist.is_initialized():
            raise RuntimeError("TorchDistComm needs torch.distributed.init_process_group first")
        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        self.device = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
        self.seconds = 0.0

    def share(self, items: Sequence[T]) -> list[T]:
        """Round-robin: item j goes to worker j mod N (every worker plans the same list)."""
        return list(items[self.rank::self.world_size])

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all workers, in place (moved to the backend's device and back if needed)."""
        start = time.perf_counter()
        buffer = tensor if tensor.device == self.device else tensor.to(self.device)
        self.dist.all_reduce(buffer)
        if buffer is not tensor:
            tensor.copy_(buffer)
        self.seconds += time.perf_counter() - start
        return tensor

    def broadcast_float(self, value: float | None) -> float:
        """Rank 0's ``value`` on every worker (the others pass None)."""
        start = time.perf_counter()
        holder = torch.tensor([0.0 if value is None else float(value)], dtype=torch.float64, device=self.device)
        self.dist.broadcast(holder, src=0)
        self.seconds += time.perf_counter() - start
        return float(holder.item())


def shard_rows(batch: int, comm: LocalComm | None) -> slice:
    """This worker's contiguous slice of a batch of ``batch`` rows (all of it in a world of one)."""
    if comm is None or comm.world_size == 1:
        return slice(0, batch)
    bounds = torch.linspace(0, batch, comm.world_size + 1).round().long().tolist()
    return slice(bounds[comm.rank], bounds[comm.rank + 1])


def has_batch_norm(module: torch.nn.Module) -> bool:
    """Batch-norm statistics span the batch, so a sharded batch would change the numbers."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def zero_contribution(images: torch.Tensor, lr: torch.Tensor | None) -> Contribution:
    """What a worker with no work item this iteration adds to the sum."""
    return Contribution(0.0, torch.zeros_like(images.detach()), None if lr is None else torch.zeros_like(lr.detach()))


def all_reduce_contribution(local: Contribution, comm: LocalComm) -> Contribution:
    """Sum of every worker's contribution, identical on all workers, in one flat all-reduce.

    Loss, image gradient and lr gradient travel in one buffer: one message per
    iteration instead of three. A NaN anywhere stays NaN in the sum, so the
    non-finite check after the reduction sees it on every worker alike.
    """
    if comm.world_size == 1:
        return local
    parts = [torch.tensor([local.loss], dtype=local.grad_images.dtype, device=local.grad_images.device),
             local.grad_images.reshape(-1)]
    if local.grad_lr is not None:
        parts.append(local.grad_lr.reshape(-1).to(local.grad_images.dtype))
    flat = comm.all_reduce_(torch.cat(parts))
    n = local.grad_images.numel()
    grad_images = flat[1:1 + n].view_as(local.grad_images)
    grad_lr = None if local.grad_lr is None else flat[1 + n:].view_as(local.grad_lr).to(local.grad_lr.dtype)
    return Contribution(float(flat[0]), grad_images, grad_lr)


__all__ = ["LocalComm", "TorchDistComm", "shard_rows", "has_batch_norm", "zero_contribution", "all_reduce_contribution"]
