"""The README quickstart, timed: PDD+MTT on Fashion-MNIST (2 stages x IPC 1) vs random real images at IPC 2.

    python benchmarks/quickstart.py [--out DIR]

Writes benchmarks/results/quickstart.json: wall time, both accuracies
(mean ± std over the recipe's runs), per-stage numbers, config, seed, versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.jobs.run import run_pdd
from pdd_ray.provenance import write_json

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/pdd-quickstart-bench")
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # a timing needs a fresh run, not a resumed one
    config = load_config(DistillConfig, HERE.parent / "tune_configs" / "quickstart_fashion_mnist.yaml",
                         [f"out={args.out}"])
    start = time.perf_counter()
    metrics = run_pdd(config, progress=False)["metrics"]
    wall = time.perf_counter() - start
    pdd, rnd = metrics["pdd"], metrics["random_real"]
    print(f"{'method':<26} {'total ipc':>9} {'test accuracy %':>18}")
    print(f"{'PDD (mtt, progressive)':<26} {metrics['total_ipc']:>9} {100 * pdd['mean']:>10.2f} ± {100 * pdd['std']:.2f}")
    print(f"{'random real images':<26} {metrics['total_ipc']:>9} {100 * rnd['mean']:>10.2f} ± {100 * rnd['std']:.2f}")
    print(f"wall time {wall / 60:.1f} min on {os.cpu_count()} CPU cores")
    write_json(HERE / "results" / "quickstart.json",
               {"wall_seconds": wall, "cpu_cores": os.cpu_count(), **metrics})


if __name__ == "__main__":
    main()
