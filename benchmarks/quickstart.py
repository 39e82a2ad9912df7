"""The README quickstart, timed, and the stage-count question it raises.

    python benchmarks/quickstart.py [--out DIR] [--skip-single]

1. The quickstart recipe: PDD + MTT on Fashion-MNIST, 2 stages x IPC 1, against
   random real images at IPC 2 trained for the same number of epochs in total.
2. Single-stage MTT at the same total IPC (1 stage x IPC 2) and the same number
   of distillation iterations (2 x the per-stage count), matched against the
   same stage-1 experts and evaluated with the same protocol.

Writes benchmarks/results/quickstart.json: wall times, accuracies (mean ± std
over the recipe's runs), per-stage numbers, configs, seed, versions, protocol.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from pdd_ray.config import load_config, to_dict
from pdd_ray.distill.config import DistillConfig
from pdd_ray.jobs.run import run_pdd
from pdd_ray.provenance import versions, write_json

HERE = Path(__file__).parent
RECIPE = HERE.parent / "tune_configs" / "quickstart_fashion_mnist.yaml"


def _timed(config: DistillConfig) -> tuple[dict, float]:
    start = time.perf_counter()
    metrics = run_pdd(config, progress=False)["metrics"]
    return metrics, time.perf_counter() - start


def _row(name: str, ipc: int, result: dict, epochs: int | None = None) -> str:
    epochs_text = f"{epochs:>8}" if epochs is not None else f"{'':>8}"
    return f"{name:<34} {ipc:>9} {epochs_text} {100 * result['mean']:>10.2f} ± {100 * result['std']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/pdd-quickstart-bench")
    p.add_argument("--skip-single", action="store_true", help="only the quickstart run")
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # a timing needs a fresh run, not a resumed one
    pdd_config = load_config(DistillConfig, RECIPE, [f"out={args.out}/pdd"])
    pdd, pdd_wall = _timed(pdd_config)
    result = {"quickstart": {"wall_seconds": pdd_wall, **pdd}, "cpu_cores": os.cpu_count(), "versions": versions()}
    rows = [_row("PDD + MTT, 2 stages x 1", pdd["total_ipc"], pdd["pdd"], pdd.get("pdd_epochs")),
            _row("random real images", pdd["total_ipc"], pdd["random_real"], pdd.get("random_real_epochs"))]
    if not args.skip_single:
        s = pdd_config.stages
        single_config = load_config(DistillConfig, RECIPE, [
            f"out={args.out}/mtt_1x{s.num_stages * s.ipc}", "stages.num_stages=1", f"stages.ipc={s.num_stages * s.ipc}",
            f"stages.iterations={s.num_stages * s.iterations}", f"buffer={Path(args.out) / 'pdd' / 'experts' / 'stage_1'}"])
        single, single_wall = _timed(single_config)
        result["single_stage_mtt"] = {"wall_seconds": single_wall, **single, "config": to_dict(single_config)}
        rows.append(_row(f"MTT, 1 stage x {s.num_stages * s.ipc}", single["total_ipc"], single["pdd"],
                         single.get("pdd_epochs")))
    print(f"{'method':<34} {'total ipc':>9} {'epochs':>8} {'test accuracy %':>18}")
    print("\n".join(rows))
    print(f"quickstart wall time {pdd_wall / 60:.1f} min on {os.cpu_count()} CPU cores")
    print(f"protocol: {pdd.get('protocol')}")
    write_json(HERE / "results" / "quickstart.json", result)


if __name__ == "__main__":
    main()
