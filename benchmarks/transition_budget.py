"""What a fixed transition budget costs: PDD + MTT on Fashion-MNIST, epochs on U_i vs a fixed number of steps.

    nice -n 10 python benchmarks/transition_budget.py [--out DIR] [--steps 100 [300 ...]] [--keep-finished] [--quick]

Every arm is the same run (the quickstart recipe at 3 stages x IPC 1, shrunk: see
SCALE; the same stage-1 experts, the same seed) except for how long each transition expert
trains on the synthetic union U_i before real data:

    epochs 1000   the reference (``experts.recipe.transition_epochs``, the protocol's
                  phase schedule: 1001 epochs, x0.1 after epoch 501)
    steps N       ``experts.recipe.transition_steps=N``: N SGD steps at batch 256
                  (x0.1 from step N//2), the same cost at every stage

At this scale U_i (10-20 images) fits one batch, so the faithful arm is 1001
steps per expert at every stage; with unions larger than a batch its cost grows
with the union while a step budget's does not. Stage 1 (random-init experts) is
the same in every arm, so the arms differ from stage 2 on.

``--keep-finished`` keeps the arms already complete in the result file (same SCALE) and
runs only the others; such an arm builds its own stage-1 experts from the same seed and
recipe instead of reading the first arm's (each arm records its torch threads and date).

Writes benchmarks/results/transition_budget.json: per arm the final test
accuracy (progressive evaluation, mean ± std over the runs), per-stage
validation accuracy and learned lr, transition-expert time per stage (mean
seconds on U_i per expert, and the stage's expert-buffer wall time), plus
config, seed, versions, precision and the evaluation protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

from pdd_ray.config import load_config, to_dict
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.run_dir import RunDir
from pdd_ray.jobs.run import run_pdd
from pdd_ray.provenance import now, versions, write_json

HERE = Path(__file__).parent
RECIPE = HERE.parent / "tune_configs" / "quickstart_fashion_mnist.yaml"
RESULT = HERE / "results" / "transition_budget.json"
FAITHFUL_EPOCHS = 1000  # the reference's epoch_eval_train
# The quickstart recipe at 3 stages, shrunk so both arms fit ~20 min on 2 cores shared with other work:
# 2000 training images (200 a class), 2 experts, 20 iterations a stage, a 50-epoch validation check.
SCALE = ["stages.num_stages=3", "stages.ipc=1", "stages.iterations=20", "stages.eval_every=10",
         "stages.checkpoint_every=10", "stages.eval_epochs=50", "eval.runs=3", "eval.epochs=200",
         "data.train_per_class=200", "data.val_size=500", "experts.num_experts=2"]
QUICK = ["stages.num_stages=2", "stages.iterations=4", "stages.eval_every=2", "stages.eval_epochs=2",
         "stages.checkpoint_every=2", "eval.runs=2", "eval.epochs=3", "experts.num_experts=2",
         "experts.recipe.epochs=4", "data.train_per_class=50", "data.val_size=100"]


def arm_overrides(budget: tuple[str, int]) -> list[str]:
    """The recipe overrides of one arm: ("epochs", E) or ("steps", N)."""
    kind, value = budget
    if kind == "epochs":
        return [f"experts.recipe.transition_epochs={value}"]
    return ["experts.recipe.transition_epochs=null", f"experts.recipe.transition_steps={value}"]


def transition_times(config: DistillConfig) -> list[dict]:
    """Per chained stage: mean seconds an expert spent on U_i, and the buffer's wall time (first to last write)."""
    paths, rows = RunDir.of(config), []
    for index in range(1, config.stages.num_stages):
        manifest = json.loads((paths.experts(index) / "manifest.json").read_text())
        experts = list(manifest["experts"].values())
        on_union = [e["transition_seconds"] for e in experts]
        rows.append({"stage": index + 1, "experts": len(experts),
                     "transition_seconds_per_expert": statistics.fmean(on_union),
                     "transition_seconds_max": max(on_union),
                     "buffer_seconds": max(e["finished"] for e in experts) - _created(manifest)})
    return rows


def _created(manifest: dict) -> float:
    from datetime import datetime
    return datetime.fromisoformat(manifest["created"]).timestamp()


def run_arm(name: str, budget: tuple[str, int], out: Path, extra: list[str], buffer: str | None) -> dict:
    """One full run (experts -> stages -> evaluation) of one arm; its numbers."""
    overrides = [f"out={out / name}", "device=cpu", *SCALE, *extra, *arm_overrides(budget)]
    if buffer is not None:
        overrides.append(f"buffer={buffer}")
    config = load_config(DistillConfig, RECIPE, overrides)
    start = time.perf_counter()
    metrics = run_pdd(config, progress=False)["metrics"]
    wall = time.perf_counter() - start
    return {"arm": name, "budget": {budget[0]: budget[1]}, "wall_seconds": wall,
            "test_accuracy": metrics["pdd"], "random_real": metrics["random_real"],
            "stages": metrics["stages"], "transition": transition_times(config),
            "config": to_dict(config), "protocol": metrics["protocol"],
            "torch_threads": torch.get_num_threads(), "finished": now(), "versions": versions()}


def finished_arms() -> dict[str, dict]:
    """The arms of the committed result file that ran at today's SCALE, by their directory name."""
    if not RESULT.is_file():
        return {}
    result = json.loads(RESULT.read_text())
    if result.get("scale") != SCALE:
        return {}
    return {_directory(arm["budget"]): arm for arm in result["arms"]}


def _directory(budget: dict) -> str:
    (kind, value), = budget.items()
    return f"{kind}_{value}"


def _table(arms: list[dict]) -> str:
    lines = [f"{'transition budget':<20} {'test accuracy %':>16} {'U_i seconds / expert by stage':>32} {'wall s':>8}"]
    for arm in arms:
        acc = arm["test_accuracy"]
        per_stage = ", ".join(f"{t['transition_seconds_per_expert']:.1f}" for t in arm["transition"])
        lines.append(f"{arm['arm']:<20} {100 * acc['mean']:>9.2f} ± {100 * acc['std']:.2f} {per_stage:>32} "
                     f"{arm['wall_seconds']:>8.0f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/pdd-transition-budget")
    p.add_argument("--steps", type=int, nargs="+", default=[100], help="fixed step budgets to compare")
    p.add_argument("--keep-finished", action="store_true", help="keep the result file's finished arms, run the rest")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (not written to results)")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # timings need fresh runs, not resumed ones
    extra = QUICK if args.quick else []
    budgets = [("epochs", FAITHFUL_EPOCHS)] + [("steps", n) for n in args.steps]
    began = time.perf_counter()
    arms, buffer = [], None
    kept = finished_arms() if args.keep_finished and not args.quick else {}
    for kind, value in budgets:
        directory = f"{kind}_{value}"
        if directory in kept:
            arms.append(kept[directory])
            continue
        arm = run_arm(directory, (kind, value), out, extra, buffer)
        arm["arm"] = f"{kind} {value}" + (" (faithful)" if kind == "epochs" else "")
        arms.append(arm)
        # Every later arm matches the first arm's stage-1 experts: the arms differ only in their transitions.
        buffer = buffer or str(out / directory / "experts" / "stage_1")
        if not args.quick:  # what is finished is on disk even if a later arm never ends
            _write(arms, began, complete=False)
    table = _table(arms)
    print(table)
    print(f"protocol: {arms[0]['protocol']}")
    print(f"total {(time.perf_counter() - began) / 60:.1f} min on {os.cpu_count()} CPU cores")
    if not args.quick:
        _write(arms, began, complete=True)


def _write(arms: list[dict], began: float, complete: bool) -> None:
    write_json(RESULT, {"what": "transition budget ablation: PDD + MTT, Fashion-MNIST, 3 stages x IPC 1",
                        "complete": complete, "arms": arms, "table": _table(arms), "scale": SCALE,
                        "seed": arms[0]["config"]["seed"],
                        "precision": f"float32 on CPU ({torch.get_num_threads()} torch threads)",
                        "evaluation_protocol": arms[0]["protocol"], "total_seconds": time.perf_counter() - began,
                        "arm_seconds": sum(arm["wall_seconds"] for arm in arms),
                        "note": ("accuracies compare across arms (same seed, recipe and stage-1 experts up to "
                                 "float rounding: see each arm's stage 1); wall and transition seconds compare "
                                 "only between arms run in one session at one load (each arm records its "
                                 "finished date and torch threads). Steps per transition expert and stage: "
                                 "faithful 1001 x ceil(|U_i| / 256), steps N: N."),
                        "cpu_cores": os.cpu_count(), "versions": versions(), "created": now()})


if __name__ == "__main__":
    main()
