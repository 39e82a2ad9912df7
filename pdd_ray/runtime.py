"""Per-process compute settings: torch's thread count and the C allocator's caching.

Every process that trains or unrolls (the CLI's own, each Ray task, each Ray Train
worker) calls ``configure_compute(threads)`` once before any compute.

Why the allocator: an MTT step allocates and frees hundreds of activation-sized
tensors. glibc's malloc returns large blocks to the kernel as soon as they are
freed (``mmap``/``munmap`` above a size threshold, heap trimming below it), so the
next step takes page faults on fresh memory for every one of them. Raising the
mmap threshold to its maximum and keeping freed heap (trim threshold, top pad)
lets the next step reuse the same pages. It costs resident memory that stays
with the process at its high-water mark, which the next step needs anyway.
Measured by ``benchmarks/speed.py``; ``PDD_RAY_MALLOC_TUNING=0`` turns it off.
Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Activations of a width-128 ConvNet step run to tens of MiB: keep them all on the heap. glibc
# 2.36 takes 1 GiB; older ones refuse more than HEAP_MAX_SIZE / 2 (32 MiB), the fallback.
MMAP_THRESHOLDS = (1 * 2**30, 32 * 2**20)
KEEP_FREED = 1 * 2**30  # trim the heap only when this much sits free at its top
TOP_PAD = 256 * 2**20  # grow the heap in large steps

_tuned: bool | None = None


def tune_malloc() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); True when it took effect.

    Idempotent; a no-op (False) off glibc or with ``PDD_RAY_MALLOC_TUNING=0``.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("PDD_RAY_MALLOC_TUNING", "1").strip() == "0":
        return _tuned
    libc = _glibc()
    if libc is not None:
        mmap = any(libc.mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLDS)
        _tuned = mmap and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED) == 1 and libc.mallopt(M_TOP_PAD, TOP_PAD) == 1
    return _tuned


def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def configure_compute(threads: int | float | None = None) -> None:
    """Once per process before compute: torch intra-op threads = this process's CPU share
    (``threads``; None leaves torch's default) and the allocator tuning."""
    import torch  # here, not at module level: the CLI tunes malloc before it imports torch

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    tune_malloc()


def describe_compute() -> dict:
    """What ``configure_compute`` set in this process, for result files."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "malloc_tuned": bool(_tuned)}
