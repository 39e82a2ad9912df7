"""Class-incremental Fashion-MNIST, phase by phase: PDD + MTT vs MTT vs herding vs random at equal memory.

    nice -n 5 python benchmarks/continual.py [--out DIR] [--fresh] [key=value ...]

Runs ``tune_configs/continual_fashion_mnist.yaml`` (5 phases x 2 classes, 4 images
per class of memory: PDD + MTT 2 stages x 2, MTT 1 x 4, herding, random real
images; each phase distilled from its own classes only; after phase t a fresh
network trains on the memory of phases 1..t and is tested on their classes),
with any ``key=value`` overrides on top, and writes
``benchmarks/results/continual.json``: the method x phase table (mean ± std
over the evaluation runs), average incremental and last-phase accuracy, the
CPU budget it ran at (the recipe's distillation and evaluation settings, wall
time, driver CPU time, cores and load), the config, seed, versions, precision
and the protocol. The run directory is kept, so a killed benchmark resumes
(``--fresh`` starts over; the wall time then covers the whole run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from pdd_ray.config import load_config
from pdd_ray.continual.config import ContinualConfig
from pdd_ray.jobs.continual import run_continual
from pdd_ray.provenance import versions, write_json

HERE = Path(__file__).parent
RECIPE = HERE.parent / "tune_configs" / "continual_fashion_mnist.yaml"
RESULT = HERE / "results" / "continual.json"


def budget(config: ContinualConfig) -> dict:
    """The compute the numbers were bought with, in the recipe's own terms."""
    run = config.run_config(config.builders[0])
    return {"distill_iterations_per_stage": run.stages.iterations, "syn_steps": run.mtt.syn_steps,
            "experts_per_buffer": run.experts.num_experts, "expert_epochs": run.experts.recipe.epochs,
            "transition_epochs": run.experts.recipe.transition_epochs,
            "validation": f"{run.stages.val_nets} net(s) x {run.stages.eval_epochs} epochs every "
                          f"{run.stages.eval_every} iterations",
            "train_images_per_class": config.data.train_per_class, "eval_runs": config.eval.runs,
            "eval_epochs_per_phase": config.eval.epochs, "network": f"{config.model.arch} width {config.model.width}"}


def table(builders: dict) -> str:
    """Method x phase, test accuracy % on the seen classes."""
    phases = len(next(iter(builders.values()))["phases"])
    head = f"{'method':<18}" + "".join(f"{'phase ' + str(t):>15}" for t in range(1, phases + 1))
    lines = [head + f"{'avg incr.':>15}{'last':>15}"]
    for label, b in builders.items():
        cells = "".join(f"{100 * p['mean']:>8.2f} ± {100 * p['std']:<4.1f}" for p in b["phases"])
        avg, last = b["average_incremental"], b["last"]
        lines.append(f"{label:<18}{cells}{100 * avg['mean']:>8.2f} ± {100 * avg['std']:<4.1f}"
                     f"{100 * last['mean']:>8.2f} ± {100 * last['std']:<4.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/pdd-continual-bench")
    p.add_argument("--fresh", action="store_true", help="delete the run directory first")
    p.add_argument("overrides", nargs="*", help="key=value on top of the recipe")
    args = p.parse_args()
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    config = load_config(ContinualConfig, RECIPE, [f"out={args.out}", *args.overrides])
    load_before, wall, cpu = os.getloadavg(), time.perf_counter(), time.process_time()
    summary = run_continual(config, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    record = json.loads((Path(args.out) / "continual.json").read_text())
    record.update({"benchmark": "class-incremental Fashion-MNIST, 5 phases x 2 classes, memory 4 per class",
                   "recipe": str(RECIPE.relative_to(HERE.parent)), "overrides": args.overrides,
                   "budget": {**budget(config), "wall_seconds_this_invocation": wall,
                              "driver_cpu_seconds_this_invocation": cpu,
                              "memories_built_this_invocation": summary["built"], "cpu_cores": os.cpu_count(),
                              "load_average_before": load_before, "load_average_after": os.getloadavg(),
                              "device": config.device, "note": "a shared 2-core CPU running other benchmarks; "
                              "Ray workers' CPU time is not in the driver's"},
                   "table": table(summary["builders"]), "versions": versions()})
    write_json(RESULT, record)
    print(record["table"])
    print(f"wall {wall / 60:.1f} min; wrote {RESULT}")


if __name__ == "__main__":
    main()
