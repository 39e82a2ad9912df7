"""Chaos: SIGKILL a tiny ``pdd-ray run`` at random moments, resume it, compare with an uninterrupted run.

Not part of the test suite (it takes ~15 minutes). Each trial starts a fresh run
directory, kills the whole process group of ``pdd-ray run`` (driver, its local
Ray, every worker) with SIGKILL at a random moment of the run, runs the same
command again, and compares what it ends with against a run never interrupted:

* the synthetic set: every stage's images and labels bit for bit, and the learned lrs;
* ``metrics.json``: test accuracies of PDD and of the random baseline, each stage's
  best iteration and validation accuracy;
* the derived files: every ``stage_<i>.png``, ``report.md``, the accuracy plot.

A kill is *survived* when the resumed run finishes with exit status 0 (the killed
run's lock is stale, so it must be taken over) and ends identical. Results go to
``benchmarks/results/chaos.json`` (config, seed, versions, where each kill landed)
and a table is printed.

    python benchmarks/chaos.py --kills 8 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from pdd_ray.provenance import now, versions, write_json

RESULTS = Path(__file__).parent / "results" / "chaos.json"
# About a minute on a 2-core CPU: experts for 2 stages (transition chain), 2 stages with checkpoints and
# validation checks, the final evaluation against random real images.
TINY = ["model.width=8", "model.depth=2", "device=cpu", "data.train_per_class=50", "data.val_size=100",
        "stages.num_stages=2", "stages.ipc=1", "stages.iterations=20", "stages.eval_every=10",
        "stages.checkpoint_every=5", "stages.eval_epochs=5", "stages.val_nets=1", "mtt.syn_steps=5",
        "mtt.expert_epochs=1", "mtt.max_start_epoch=2", "experts.num_experts=2", "experts.recipe.epochs=3",
        "experts.recipe.batch_size=64", "experts.recipe.transition_epochs=3", "eval.runs=1", "eval.epochs=5"]
DERIVED = ("report.md", "accuracy_vs_stage.png", "synthetic/stage_1.png", "synthetic/stage_2.png")


def command(out: Path, seed: int) -> list[str]:
    """The tiny run, as a user would type it.

    ``--config default`` because ``run`` requires an explicit config; TINY then shrinks the defaults.
    """
    return [sys.executable, "-m", "pdd_ray", "run", "--config", "default", "--out", str(out), "--seed", str(seed),
            *TINY]


def run(out: Path, seed: int, kill_after: float | None = None) -> tuple[int | None, float]:
    """Run the command; with ``kill_after``, SIGKILL its whole process group then (None: it was killed)."""
    began = time.monotonic()
    with open(out.parent / f"{out.name}.log", "a") as log:
        proc = subprocess.Popen(command(out, seed), stdout=log, stderr=log, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            code = proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, like a crash
            proc.wait()
            code = None
    return code, time.monotonic() - began


def where(out: Path) -> str:
    """What the run directory held when the kill came (where it landed)."""
    if (out / "metrics.json").is_file():
        return "after the report"
    manifest = out / "synthetic" / "manifest.json"
    stages = len(json.loads(manifest.read_text())["stages"]) if manifest.is_file() else 0
    checkpoints = sorted(p.name for p in (out / "stages").glob("stage_*.ckpt")) if (out / "stages").is_dir() else []
    experts = sorted(p.parent.name for p in (out / "experts").glob("stage_*/manifest.json")) \
        if (out / "experts").is_dir() else []
    return f"{stages} stage(s) finished; checkpoints {checkpoints or '-'}; buffers begun {experts or '-'}"


def outcome(out: Path) -> dict:
    """What a finished run ends with: the set's tensors and lrs, the metrics that matter, the derived files."""
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    tensors = [load_file(str(out / "synthetic" / e["file"])) for e in manifest["stages"]]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"tensors": tensors, "lrs": [e["lr"] for e in manifest["stages"]],
            "metrics": {"pdd": metrics["pdd"]["mean"], "random_real": metrics["random_real"]["mean"],
                        "per_phase": metrics["pdd"]["per_phase_mean"],
                        "stages": [(s.get("best_iteration"), s.get("val_accuracy")) for s in metrics["stages"]]},
            "derived": [name for name in DERIVED if (out / name).is_file()]}


def identical(a: dict, b: dict) -> bool:
    """Bit-identical tensors, equal lrs and metrics, and the same derived files."""
    same_tensors = len(a["tensors"]) == len(b["tensors"]) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a["tensors"], b["tensors"]))
    return same_tensors and a["lrs"] == b["lrs"] and a["metrics"] == b["metrics"] and a["derived"] == b["derived"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed and the kill moments' seed")
    parser.add_argument("--work", default="runs/chaos", help="scratch directory (emptied first)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    work = Path(args.work)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    code, reference_s = run(work / "reference", args.seed)
    if code != 0:
        sys.exit(f"the uninterrupted run failed (exit {code}); see {work / 'reference.log'}")
    reference = outcome(work / "reference")
    moments = random.Random(args.seed)
    trials = []
    for k in range(args.kills):
        out = work / f"trial_{k}"
        at = round(moments.uniform(1.0, 0.95 * reference_s), 1)
        killed_code, _ = run(out, args.seed, kill_after=at)
        landed = where(out) if killed_code is None else "finished before the kill"
        resumed_code, resumed_s = run(out, args.seed)
        same = resumed_code == 0 and identical(outcome(out), reference)
        trials.append({"kill_at_s": at, "killed": killed_code is None, "landed": landed,
                       "resume_exit": resumed_code, "resume_s": round(resumed_s, 1), "identical": same})
        print(f"trial {k}: kill at {at:6.1f}s ({landed}); resume exit {resumed_code}, identical {same}", flush=True)
    kills = [t for t in trials if t["killed"]]
    survived = [t for t in kills if t["identical"]]
    result = {"benchmark": "chaos", "kills_tried": len(kills), "kills_survived": len(survived),
              "identical": all(t["identical"] for t in trials), "uninterrupted_s": round(reference_s, 1),
              "trials": trials, "command": " ".join(["pdd-ray", *command(Path("OUT"), args.seed)[3:]]),
              "config": TINY, "seed": args.seed, "created": now(), "versions": versions()}
    write_json(args.out, result)
    print_table(result)


def print_table(result: dict) -> None:
    print(f"\n{'trial':>5} {'kill at s':>9} {'landed':<70} {'resume':>6} {'identical':>9}")
    for k, t in enumerate(result["trials"]):
        print(f"{k:>5} {t['kill_at_s']:>9.1f} {t['landed'][:70]:<70} {str(t['resume_exit']):>6} "
              f"{'yes' if t['identical'] else 'NO':>9}")
    print(f"kills survived {result['kills_survived']} / {result['kills_tried']}; identical to the uninterrupted "
          f"run ({result['uninterrupted_s']} s): {'yes' if result['identical'] else 'no'}")


if __name__ == "__main__":
    main()
