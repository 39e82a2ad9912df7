"""A torch.distributed process group of local processes, without Ray.

The numerics of data-parallel matching (communicator, sharded unroll, stage loop)
are the same whoever starts the processes; this starter lets tests and
``benchmarks/parallel.py`` run them in seconds. Production runs use Ray Train
(``pdd_ray.parallel.trainer``), which sets up the same process group on a cluster.
"""

from __future__ import annotations

import os
import queue as queue_module
import tempfile
import traceback
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def run_process_group(world_size: int, fn: Callable[..., Any], *args, backend: str = "gloo",
                      timeout_s: float = 600.0, threads: int = 1) -> list[Any]:
    """Run ``fn(comm, *args)`` on ``world_size`` processes joined in one group; return each rank's result.

    ``fn`` must be importable (module level). Tensors in results come back as CPU copies.
    A failure on any rank raises here with that rank's traceback.
    """
    context = mp.get_context("spawn")
    results: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pdd-ray-pg-") as directory:
        init = f"file://{os.path.join(directory, 'rendezvous')}"
        channel = context.Queue()
        processes = [context.Process(target=_entry, args=(rank, world_size, init, backend, threads, fn, args, channel))
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        try:
            for _ in range(world_size):
                rank, ok, payload = channel.get(timeout=timeout_s)
                if not ok:
                    raise RuntimeError(f"rank {rank} failed:\n{payload}")
                results[rank] = payload
        except queue_module.Empty:
            raise RuntimeError(f"process group timed out after {timeout_s} s") from None
        finally:
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
    return [results[rank] for rank in range(world_size)]


def _entry(rank, world_size, init, backend, threads, fn, args, channel) -> None:
    import torch.distributed as dist

    from pdd_ray.parallel.comm import TorchDistComm

    from pdd_ray.runtime import configure_compute
    configure_compute(threads)
    try:
        device = torch.device("cpu")
        if backend == "nccl":  # one GPU per rank, as Ray Train gives each worker
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=world_size)
        try:
            result = fn(TorchDistComm(device), *args)
        finally:
            dist.destroy_process_group()
        channel.put((rank, True, _to_cpu(result)))
    except BaseException:  # the parent must hear about any failure, or it waits for the timeout
        channel.put((rank, False, traceback.format_exc()))


def _to_cpu(value):
    # Fresh CPU copies: tensors sent through a queue must not point at memory a dead process owned.
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone().numpy()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


__all__ = ["run_process_group"]
