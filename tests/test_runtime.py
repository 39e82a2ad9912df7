"""Per-process compute settings: threads, and glibc keeping freed activations for reuse."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pdd_ray.runtime import _glibc, configure_compute, describe_compute

# Allocates and frees a 256 MiB tensor, then prints (tune_malloc's answer, MiB still resident after the free).
PROBE = textwrap.dedent("""
    from pathlib import Path
    from pdd_ray.runtime import tune_malloc
    tuned = tune_malloc()
    import torch
    def rss():
        line = [l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS:')][0]
        return int(line.split()[1]) / 1024
    before = rss()
    x = torch.ones(64 * 2**20)
    del x
    print(tuned, round(rss() - before))
""")

needs_glibc = pytest.mark.skipif(_glibc() is None or not os.path.exists("/proc/self/status"),
                                 reason="malloc tuning is glibc-only; the probe reads /proc")


def _probe(env_value: str) -> tuple[bool, int]:
    env = {**os.environ, "PDD_RAY_MALLOC_TUNING": env_value}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, resident = out.stdout.split()
    return tuned == "True", int(resident)


@needs_glibc
def test_tuned_malloc_keeps_a_freed_activation_for_reuse_and_can_be_turned_off():
    tuned, kept = _probe("1")
    assert tuned and kept >= 200  # the 256 MiB stayed with the process for the next step
    untuned, kept_plain = _probe("0")
    assert not untuned and kept_plain < 50  # default glibc: a block this large goes straight back (munmap)


def test_configure_compute_sets_the_thread_share():
    before = torch.get_num_threads()
    try:
        configure_compute(1.7)  # a fractional CPU share rounds down, never to zero
        assert torch.get_num_threads() == 1
        configure_compute(0.5)
        assert torch.get_num_threads() == 1
        assert describe_compute()["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
