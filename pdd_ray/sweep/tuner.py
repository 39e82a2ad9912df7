"""Running a sweep on Ray Tune: the shared stage-1 buffer first, then a new or restored Tuner, then results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from pdd_ray.config import to_dict
from pdd_ray.errors import UserError
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.sweep.config import SweepConfig
from pdd_ray.sweep.plan import TUNE_NAME, SweepPlan, make_plan
from pdd_ray.sweep.report import best_row, collect_rows, merge_outcomes, write_results
from pdd_ray.sweep.space import check_points, param_space, trial_name
from pdd_ray.sweep.trial import run_trial

SWEEP_FILE = "sweep.json"
STATE_SYNC_S = 10


def run_sweep(config: SweepConfig, echo: Callable[[str], None] = print) -> dict:
    """Check every trial, build what trials share, run (or resume) the Tune experiment, write the results."""
    from pdd_ray.locking import hold_directory

    plan = make_plan(config)  # every point validated: mistakes end here, before any compute
    with hold_directory(plan.work_dir, "sweep"):  # one sweep per directory
        return _run_locked(config, plan, echo)


def _run_locked(config: SweepConfig, plan: SweepPlan, echo: Callable[[str], None]) -> dict:
    from pdd_ray.cluster import ray_session

    record_sweep(plan)
    with ray_session(config.address):
        check_cluster_fits(plan)
        if plan.build_buffer:
            build_shared_buffer(plan, echo)
        results = make_tuner(plan, echo).fit()
    rows = merge_outcomes(collect_rows(plan.work_dir), tune_outcomes(results))
    paths = write_results(plan.work_dir, rows, to_dict(config), config.mode)
    return {"rows": rows, "paths": paths, "best": best_row(rows, config.mode), "mode": config.mode,
            "work_dir": plan.work_dir}


def check_cluster_fits(plan: SweepPlan, have: dict | None = None) -> None:
    """Refuse trials the cluster can never place (Tune would wait for them forever).

    Without ``experts_per_trial`` the trial's expert bundles are first cut to as many as fit.
    """
    if have is None:
        import ray
        have = ray.cluster_resources()
    if plan.transition_experts and plan.config.experts_per_trial is None:
        plan.expert_bundles = fitting_expert_bundles(plan, have)
    bundles = trial_resources(plan).bundles
    for resource in ("CPU", "GPU"):
        need = sum(b.get(resource, 0) for b in bundles)
        if need > have.get(resource, 0):
            extra = f" + {len(bundles) - 1} transition expert(s), experts_per_trial" if len(bundles) > 1 else ""
            raise UserError(f"each trial needs {need:g} {resource} (cpus_per_trial/gpus_per_trial{extra}) but the "
                            f"Ray cluster has {have.get(resource, 0):g}; lower them or connect to a bigger cluster "
                            "(--address)")


def fitting_expert_bundles(plan: SweepPlan, have: dict) -> int:
    """The most transition-expert bundles (up to ``plan.expert_bundles``, at least 1) that fit beside a trial
    in its share of the cluster (``max_concurrent_trials`` trials at once share it; unset: one trial's worth)."""
    c, expert = plan.config, plan.transition_experts
    share = 1 / (c.max_concurrent_trials or 1)
    room = []
    for resource, trial_need in (("CPU", c.cpus_per_trial), ("GPU", c.gpus_per_trial)):
        if expert[resource] > 0:
            room.append(int((have.get(resource, 0) * share - trial_need) / expert[resource] + 1e-9))
    return max(1, min([plan.expert_bundles, *room]))


def record_sweep(plan: SweepPlan) -> None:
    """Write WORK/sweep.json once; refuse to mix a changed sweep into an existing directory."""
    path = Path(plan.work_dir) / SWEEP_FILE
    fingerprint = plan.fingerprint()
    if path.is_file():
        if json.loads(path.read_text()).get("fingerprint") != fingerprint:
            raise UserError(f"{plan.work_dir} holds a different sweep (grid, sample, base or overrides changed); "
                            "use another out= or delete the directory to start over")
        return
    write_json(path, {"format": "pdd-ray-sweep", "fingerprint": fingerprint, "sweep": to_dict(plan.config),
                      "base": plan.base, "created": now(), "versions": versions()})


def build_shared_buffer(plan: SweepPlan, echo: Callable[[str], None]) -> None:
    """Build (or finish) the stage-1 expert buffer once, before any trial starts."""
    from pdd_ray.distill.transitions import experts_config, read_epochs
    from pdd_ray.experts.buffer import build_buffer

    points = [p for p in check_points(plan.config) if plan.run_config(p).base.needs_experts]
    config = plan.run_config(points[0], out=plan.work_dir)  # its OUT/experts/stage_1 is the shared buffer
    # Trials may sweep mtt.max_start_epoch / expert_epochs: the shared experts train what the furthest one reads.
    reads = max(read_epochs(plan.run_config(p)) for p in points)
    summary = build_buffer(experts_config(config, 0, reads=reads))
    echo(f"stage-1 expert buffer: {summary['complete']} expert(s) in {summary['out']} (shared by every trial)")


def make_tuner(plan: SweepPlan, echo: Callable[[str], None]):
    """A Tuner restored from OUT/tune when one is there (finished trials are kept), else a new one."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), trial_resources(plan))
    if tune.Tuner.can_restore(plan.experiment_path):
        echo(f"resuming the sweep in {plan.experiment_path}")
        return tune.Tuner.restore(plan.experiment_path, trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(trainable, param_space=param_space(plan.config), tune_config=tune_config(plan),
                      run_config=run_config(plan))


def trial_resources(plan: SweepPlan):
    """One bundle for the trial; for MTT trials one more per transition expert trained at once (Ray tasks).

    Tune schedules a trial's child tasks inside its placement group, so the extra bundles mean
    ``plan.expert_bundles`` transition experts start together, even when trials hold every other CPU.
    """
    from ray.tune import PlacementGroupFactory

    c = plan.config
    bundles = [_bundle(c.cpus_per_trial, c.gpus_per_trial)]
    if plan.transition_experts:
        expert = _bundle(plan.transition_experts["CPU"], plan.transition_experts["GPU"])
        bundles += [dict(expert) for _ in range(plan.expert_bundles)]
    return PlacementGroupFactory(bundles)


def _bundle(cpus: float, gpus: float) -> dict:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def tune_config(plan: SweepPlan):
    """Metric/mode, ASHA or FIFO, seeded sampling, the concurrency limit."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    c = plan.config
    scheduler = None
    if c.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        # max_t is the final report's step, so ASHA never cuts a trial between its last stage and its score.
        scheduler = ASHAScheduler(time_attr="step", max_t=plan.max_steps, grace_period=c.asha.grace_period,
                                  reduction_factor=c.asha.reduction_factor)
    search = BasicVariantGenerator(max_concurrent=c.max_concurrent_trials or 0, random_state=c.seed)
    return tune.TuneConfig(metric=c.metric, mode=c.mode, scheduler=scheduler, search_alg=search,
                           num_samples=c.num_samples)


def run_config(plan: SweepPlan):
    """Tune's storage (absolute path or URI), a quiet console (one line per finished trial) and the
    logger callbacks of the sweep's ``logging`` (``pdd_ray.tracking``)."""
    from ray import tune

    from pdd_ray.sweep.console import TrialLines
    from pdd_ray.tracking import tune_callbacks
    # Tune's state is copied to storage_path at most every sync_period (default 300 s); a short period
    # means a killed sweep forgets at most a few seconds of trial statuses (the files are small).
    return tune.RunConfig(name=TUNE_NAME, storage_path=plan.storage_path, verbose=0,
                          callbacks=[TrialLines(), *tune_callbacks(plan.config.logging, plan.work_dir, plan.config.tracking)],
                          sync_config=tune.SyncConfig(sync_period=STATE_SYNC_S),
                          failure_config=tune.FailureConfig(max_failures=0))


def tune_outcomes(results) -> dict[str, dict]:
    """``{trial name: {params, error, stopped}}`` from a ResultGrid."""
    outcomes = {}
    for result in results:
        params = dict(result.config or {})
        error = _error_line(result.error) if result.error else None
        stopped = not error and not (result.metrics or {}).get("final")
        outcomes[trial_name(params)] = {"params": params, "error": error, "stopped": stopped}
    return outcomes


def _error_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def report_sweep(work_dir: str | Path) -> dict:
    """Rebuild results.csv/json and heatmap.png of a finished or partial sweep from its directory (no Ray)."""
    work = Path(work_dir).expanduser().resolve()
    path = work / SWEEP_FILE
    if not path.is_file():
        raise UserError(f"{work} is not a sweep directory: no {SWEEP_FILE}")
    sweep = json.loads(path.read_text())["sweep"]
    rows, mode = collect_rows(work), sweep.get("mode", "max")
    paths = write_results(work, rows, sweep, mode)
    return {"rows": rows, "paths": paths, "best": best_row(rows, mode), "mode": mode, "work_dir": str(work)}
