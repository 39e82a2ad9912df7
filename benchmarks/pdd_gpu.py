"""GPU run of the issue's comparison: Fashion-MNIST IPC 10, PDD+MTT (5 stages x 2) vs MTT (1 stage x 10).

    python benchmarks/pdd_gpu.py [--iterations N] [--experts N] [--data-root DIR]

Runs both shipped recipes (tune_configs/pdd_mtt_fashion_mnist_ipc10.yaml and
mtt_fashion_mnist_ipc10.yaml) with the given budget overrides, then writes
benchmarks/results/pdd_gpu.json with both reports' numbers, the overrides
and versions. Each run resumes if interrupted, so it can be spread over
several device calls.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.jobs.run import run_pdd
from pdd_ray.provenance import now, versions, write_json

HERE = Path(__file__).parent
RECIPES = {"pdd_mtt_5x2": "pdd_mtt_fashion_mnist_ipc10.yaml", "mtt_1x10": "mtt_fashion_mnist_ipc10.yaml"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=1000, help="per stage (recipes say 5000)")
    p.add_argument("--experts", type=int, default=20, help="experts per buffer (recipes say 50)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/gpu")
    p.add_argument("--only", choices=list(RECIPES), default=None)
    args = p.parse_args()
    results_path = HERE / "results" / "pdd_gpu.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, recipe in RECIPES.items():
        if args.only and name != args.only:
            continue
        overrides = [f"out={args.out}/{name}", f"stages.iterations={args.iterations}",
                     f"experts.num_experts={args.experts}", f"eval.runs={args.runs}", "device=cuda"]
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        config = load_config(DistillConfig, HERE.parent / "tune_configs" / recipe, overrides)
        summary = run_pdd(config)
        m = summary["metrics"]
        results[name] = {"recipe": recipe, "overrides": overrides, "pdd_mean": 100 * m["pdd"]["mean"],
                         "pdd_std": 100 * m["pdd"]["std"], "per_stage": m["pdd"]["per_phase_mean"],
                         "random_real_mean": 100 * m["random_real"]["mean"], "protocol": m["protocol"],
                         "seed": config.seed, "device": torch.cuda.get_device_name(0), "versions": versions(),
                         "measured": now()}
        write_json(results_path, results)
        print(f"{name}: {results[name]['pdd_mean']:.2f} ± {results[name]['pdd_std']:.2f} "
              f"(random real {results[name]['random_real_mean']:.2f})")


if __name__ == "__main__":
    main()
