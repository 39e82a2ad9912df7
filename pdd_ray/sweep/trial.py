"""One Tune trial: a PDD run in its own directory, reported to Tune as it validates and when it ends.

    WORK/trials/<name>/sweep_trial.json    the trial's parameters (written when it starts)
    WORK/trials/<name>/sweep_result.json   its final numbers (written last; a restarted trial reuses them)
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

from pdd_ray.distill.config import DistillConfig
from pdd_ray.provenance import now, write_json
from pdd_ray.sweep.plan import SweepPlan
from pdd_ray.sweep.space import StepCounter, trial_name

TRIAL_FILE = "sweep_trial.json"
RESULT_FILE = "sweep_result.json"


def run_trial(params: dict, plan: SweepPlan) -> None:
    """Tune function trainable: distil (resuming the trial's run directory), score, report."""
    from ray import tune

    from pdd_ray.runtime import configure_compute

    # Tune gives each trial cpus_per_trial cores; more torch threads would only fight over them.
    configure_compute(max(1, int(plan.config.cpus_per_trial)))
    config = plan.trial_config(params)
    run_dir = Path(config.out)
    with _exclusive(run_dir / ".sweep.lock"):  # identical sampled points share one run directory
        result = stored_result(run_dir, params)
        if result is None:
            write_json(run_dir / TRIAL_FILE, {**trial_record(params, config), "started": now()})
            result = distil_and_score(config, params, tune.report)
    tune.report(final_report(result, config))


def trial_record(params: dict, config: DistillConfig) -> dict:
    """What identifies a trial in the results table, known before it runs."""
    return {"trial": trial_name(params), "params": params, "method": config.method,
            "num_stages": config.stages.num_stages, "ipc": config.stages.ipc,
            "total_ipc": config.stages.num_stages * config.stages.ipc}


def stored_result(run_dir: Path, params: dict) -> dict | None:
    """The finished result of this trial's run directory, or None (absent, or written for other params)."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("params") == json.loads(json.dumps(params)) else None


def distil_and_score(config: DistillConfig, params: dict, report) -> dict:
    """Run PDD with intermediate reports, score the final set on the validation split, store the result."""
    from pdd_ray.jobs.run import run_pdd

    steps = StepCounter(config.stages.iterations, config.stages.eval_every)

    def on_validation(stage: int, iteration: int, accuracy: float) -> None:
        report({"val_accuracy": accuracy, "step": steps.at(stage, iteration), "stage": stage + 1,
                "iteration": iteration})

    summary = run_pdd(config, progress=False, on_validation=on_validation, score_validation=True)
    val = summary["val"]
    metrics = summary.get("metrics") or {}
    pdd = metrics.get("pdd") or {}
    result = {**trial_record(params, config), "val_accuracy": val["mean"], "val_std": val["std"],
              "test_accuracy": pdd.get("mean"), "test_std": pdd.get("std"),
              "random_real_test_accuracy": (metrics.get("random_real") or {}).get("mean"),
              "protocol": protocol_text(config), "epochs_per_net": epochs_per_net(config), "finished": now()}
    write_json(Path(config.out) / RESULT_FILE, result)
    return result


def final_report(result: dict, config: DistillConfig) -> dict:
    """The last Tune report: the selection metric (validation) and the reported test accuracy."""
    steps = StepCounter(config.stages.iterations, config.stages.eval_every)
    out = {"val_accuracy": result["val_accuracy"], "step": steps.final(config.stages.num_stages), "final": 1,
           "num_stages": result["num_stages"], "ipc": result["ipc"], "total_ipc": result["total_ipc"]}
    if result.get("test_accuracy") is not None:
        out["test_accuracy"] = result["test_accuracy"]
    return out


def epochs_per_net(config: DistillConfig) -> int:
    """Epochs each evaluation network trains through the trial's whole phase list."""
    from pdd_ray.evaluation import EvalProtocol

    protocol = EvalProtocol.from_config(config.eval, config.augment, config.model.arch)
    return protocol.total_epochs(config.stages.num_stages)


def protocol_text(config: DistillConfig) -> str:
    """The evaluation protocol in words (``EvalProtocol.describe``), as results.json records it.

    The same for every trial of a sweep (stage counts vary; each row's ``epochs_per_net`` says
    how many epochs its networks trained in all)."""
    from pdd_ray.evaluation import EvalProtocol

    protocol = EvalProtocol.from_config(config.eval, config.augment, config.model.arch)
    return (protocol.describe() + "; trained on the final synthetic set; "
            "val_accuracy (selection) on the validation split, test_accuracy (reported only) on the test split")


@contextmanager
def _exclusive(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the trial process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
