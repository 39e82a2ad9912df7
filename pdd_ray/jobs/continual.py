"""``pdd-ray continual``: split the classes into phases, build each phase's memory, evaluate phase by phase.

Resumable like ``run``: finished memories (and finished builders within a phase)
and finished evaluations are read back, never recomputed; a killed run resumes
with the same command.
"""

from __future__ import annotations

from pdd_ray.continual.config import ContinualConfig
from pdd_ray.continual.evaluate import evaluate_phases
from pdd_ray.continual.executor import build_all
from pdd_ray.continual.memory import check_fits, load_memory
from pdd_ray.continual.report import write_outputs
from pdd_ray.continual.split import PhaseSplit
from pdd_ray.data.bundle import create_dataset
from pdd_ray.jobs.run import run_evaluations
from pdd_ray.locking import hold_directory
from pdd_ray.train.loop import resolve_device, seed_everything


def run_continual(config: ContinualConfig, progress: bool = True) -> dict:
    """Memories of every builder and phase (resuming), then the per-phase evaluation and the result files.

    The run directory is locked meanwhile: a second process on the same ``out=`` gets one line.
    """
    with hold_directory(config.out, "continual"):
        return _run_locked(config, progress)


def _run_locked(config: ContinualConfig, progress: bool) -> dict:
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = create_dataset(config.data)
    split = PhaseSplit.of(config.phases, data.num_classes, config.seed)  # checked before any compute
    check_fits(config, split, data)
    built = build_all(config, split, data, device, progress)
    memories = {b.label: [load_memory(config, b, t) for t in range(len(split.phases))] for b in config.builders}
    entries = evaluate_phases(config, split, data, memories,
                              lambda bundle, evaluations: run_evaluations(config, bundle, device, evaluations,
                                                                          progress), progress)
    record = write_outputs(config, split, entries, {"memories_built_this_run": built,
                                                    "executor": config.executor})
    return {"out": config.out, "built": built, "builders": record["builders"]}


def print_summary(summary: dict) -> None:
    """The method x phase table (test accuracy % on the seen classes), for the command line."""
    for label, b in summary["builders"].items():
        cells = "  ".join(f"{100 * p['mean']:6.2f}" for p in b["phases"])
        avg, last = b["average_incremental"], b["last"]
        print(f"{label:<24} {cells}   avg {100 * avg['mean']:.2f} ± {100 * avg['std']:.2f}   "
              f"last {100 * last['mean']:.2f} ± {100 * last['std']:.2f}")
    print(f"report: {summary['out']}/report.md")


__all__ = ["run_continual", "print_summary"]
