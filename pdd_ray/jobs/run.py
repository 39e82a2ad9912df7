"""``pdd-ray run`` and ``pdd-ray distill``: experts -> stages -> test evaluation -> report.

The report compares PDD against random real images at the same total IPC,
evaluated with the same protocol and trained for the same number of epochs in
total (one union phase as long as PDD's phases together), so every run says
whether distillation paid.
"""

from __future__ import annotations

import dataclasses
import sys

import torch


from pdd_ray import synset as synset_io
from pdd_ray.config import to_dict
from pdd_ray.data.bundle import create_dataset
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.divergence import divergence
from pdd_ray.distill.driver import check_data_fits, run_stages
from pdd_ray.distill.run_dir import RunDir
from pdd_ray.distill.runners import create_stage_runner
from pdd_ray.evaluation import EvalProtocol, EvalResult
from pdd_ray.evaluation.runner import Evaluation, InProcessRunner
from pdd_ray.locking import hold_directory
from pdd_ray.models import model_factory
from pdd_ray.precision import describe as describe_precision
from pdd_ray.precision import settle_precision
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.selection import SelectionContext, select
from pdd_ray.tracking import create_tracker
from pdd_ray.train.loop import resolve_device, seed_everything
from pdd_ray.visualize import Reference, png_text, save_accuracy_plot



def run_pdd(config: DistillConfig, progress: bool = True, on_iteration=None, on_validation=None,
            score_validation: bool = False) -> dict:
    """Distil every stage (resuming what exists) and, if configured, evaluate and report.

    ``on_iteration(stage, it)`` / ``on_validation(stage, it, val_accuracy)``: see ``run_stages``.
    ``score_validation``: also train the protocol's networks on the final set and score them on
    the validation split (``summary["val"]``, what a sweep selects on). The run directory is
    locked meanwhile: a second process on the same ``out=`` gets one line naming this one.
    ``summary["diverged"]`` lists the signs of a diverged stage (``pdd_ray.distill.divergence``).
    """
    with hold_directory(config.out, "run" if config.evaluate else "distill"):
        return _run_locked(config, progress, on_iteration, on_validation, score_validation)


def _run_locked(config: DistillConfig, progress: bool, on_iteration, on_validation, score_validation: bool) -> dict:
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = create_dataset(config.data)
    check_data_fits(config, data)  # before the warning below, which a refused run does not need
    if config.evaluate:
        warn_if_baseline_capped(config, data)  # before compute, not in the report hours later
    check_eval_fits(config)
    # Resolved once (recorded by the first stage): every stage, validation and evaluation of this run and its
    # resumes uses it.
    config = dataclasses.replace(config, precision=settle_precision(config.precision, device,
                                                                    RunDir.of(config).precision))
    with create_tracker(config.logging, config.out, to_dict(config), config.tracking) as tracker:
        synset = run_stages(config, data, device, progress, on_iteration, on_validation,
                            create_stage_runner(config), tracker)
    summary = {"out": config.out, "synthetic": str(RunDir.of(config).synthetic), "stages": len(synset.stages),
               "diverged": divergence(synset.stages, config.stages.iterations)}
    evaluations = {}
    if score_validation:
        evaluations["val"] = Evaluation(_protocol(config), synset.stages, (data.val.images, data.val.labels))
    if config.evaluate:
        evaluations.update(final_evaluations(config, data, synset))
    results = run_evaluations(config, data, device, evaluations, progress) if evaluations else {}
    if score_validation:
        summary["val"] = results.pop("val").to_dict()
    if config.evaluate:
        summary["metrics"] = report(config, data, synset, results)
    return summary


def check_eval_fits(config: DistillConfig) -> None:
    """With ``eval.executor=ray``, refuse before any compute runs that no node of the cluster can place."""
    if config.eval.executor != "ray":
        return
    from pdd_ray.cluster import check_fits, ray_session
    with ray_session(config.address):  # inside a command the same Ray serves the runs later
        check_fits(("eval.cpus_per_run", config.eval.cpus_per_run), ("eval.gpus_per_run", config.eval.gpus_per_run))


def _protocol(config: DistillConfig) -> EvalProtocol:
    """The evaluation protocol of every split scored."""
    return EvalProtocol.from_config(config.eval, config.augment, config.model.arch, config.precision)


def run_evaluations(config: DistillConfig, data, device, evaluations: dict[str, Evaluation],
                    progress: bool) -> dict[str, EvalResult]:
    """Train the evaluations' runs with the configured executor (``eval.executor``): same numbers either way."""
    if config.eval.executor == "process":
        make_model = model_factory(config.model, data.image_shape, data.num_classes, device)
        return InProcessRunner(make_model, device).evaluate(evaluations, progress)
    from pdd_ray.cluster import ray_session
    from pdd_ray.parallel.evaluation import ModelSpec, RayRunner
    runner = RayRunner(ModelSpec(config.model, data.image_shape, data.num_classes), config.eval.cpus_per_run,
                       config.eval.gpus_per_run)
    with ray_session(config.address):
        return runner.evaluate(evaluations, progress)


def final_evaluations(config: DistillConfig, data, synset) -> dict[str, Evaluation]:
    """PDD's set and random real images at the same total IPC and epoch budget, both on the test split."""
    protocol = _protocol(config)
    test = (data.test.images, data.test.labels)
    return {"pdd": Evaluation(protocol, synset.stages, test),
            "random_real": Evaluation(_baseline_protocol(protocol, synset),
                                      [random_real_stage(config, data, _total_ipc(synset))], test)}


def _baseline_protocol(protocol: EvalProtocol, synset) -> EvalProtocol:
    """The random baseline's protocol: one union phase as long as the PDD set's phases together."""
    return protocol.with_budget(protocol.total_epochs(len(synset.stages)))


def evaluate_and_report(config: DistillConfig, data, synset, device, progress: bool) -> dict:
    """Test-set evaluation of PDD and of random real images at the same total IPC and epoch budget."""
    results = run_evaluations(config, data, device, final_evaluations(config, data, synset), progress)
    return report(config, data, synset, results)


def report(config: DistillConfig, data, synset, results: dict[str, EvalResult]) -> dict:
    """metrics.json, the accuracy-vs-stage plot and report.md from the final evaluation's results."""
    protocol = _protocol(config)
    pdd, random = results["pdd"], results["random_real"]
    total_ipc = _total_ipc(synset)
    pdd_epochs = protocol.total_epochs(len(synset.stages))
    baseline = _baseline_protocol(protocol, synset)
    metrics = {"pdd": pdd.to_dict(), "random_real": random.to_dict(), "total_ipc": total_ipc,
               "random_real_ipc_capped": baseline_capped(data, total_ipc),
               "pdd_epochs": pdd_epochs, "random_real_epochs": baseline.total_epochs(1),
               "stages": [{"ipc": s.ipc, "lr": s.lr, **{k: v for k, v in s.info.items() if k != "history"}}
                          for s in synset.stages],
               "history": [s.info.get("history", []) for s in synset.stages],
               "protocol": (protocol.describe(num_stages=len(synset.stages)) + "; best iteration per stage chosen "
                            "on the validation split; accuracy on the test split"),
               "random_real_protocol": baseline.describe(num_stages=1) + "; accuracy on the test split",
               "tracking": list(config.logging),  # the trackers the stages were logged to
               "executor": {"eval": config.eval.executor, "cpus_per_run": config.eval.cpus_per_run,
                            "gpus_per_run": config.eval.gpus_per_run},
               "diverged": divergence(synset.stages, config.stages.iterations),
               "precision": {"compute": config.precision, "describe": describe_precision(config.precision)},
               "config": to_dict(config), "seed": config.seed, "versions": versions(), "created": now()}
    paths = RunDir.of(config)
    write_json(paths.metrics, metrics)
    label = f"PDD ({config.method})"
    save_accuracy_plot({label: pdd.per_phase_mean()}, paths.accuracy_plot, errors={label: pdd.per_phase_std()},
                       references={f"random real, ipc {total_ipc}, {baseline.total_epochs(1)} epochs":
                                   Reference(random.mean, random.std)},
                       chance=1 / data.num_classes, metadata=png_text(metrics["protocol"], "pdd-ray run", metrics),
                       title=f"{data.name}: {len(synset.stages)} stages x ipc {config.stages.ipc} "
                             f"(mean ± std over {len(pdd.per_run)} runs)")
    paths.report.write_text(render_report(config, metrics))
    return metrics


def _total_ipc(synset) -> int:
    return sum(s.ipc for s in synset.stages)


def random_real_stage(config: DistillConfig, data, ipc: int) -> synset_io.Stage:
    """Random real images, ``ipc`` per class (all of a class that has fewer), seeded by the run's seed."""
    make_model = model_factory(config.model, data.image_shape, data.num_classes, "cpu")
    chosen = select("random", data.train, ipc, SelectionContext(make_model=make_model, seed=config.seed))
    return synset_io.Stage(data.train.images[chosen], data.train.labels[chosen])


def baseline_capped(data, total_ipc: int) -> list[int]:
    """Classes with fewer training images than ``total_ipc``: there the random baseline is the whole class."""
    counts = torch.bincount(data.train.labels, minlength=data.num_classes)
    return [c for c in range(data.num_classes) if int(counts[c]) < total_ipc]


def warn_if_baseline_capped(config: DistillConfig, data) -> None:
    """Say before any compute when the random baseline cannot have the run's total IPC in every class."""
    total = config.stages.num_stages * config.stages.ipc
    short = baseline_capped(data, total)
    if short:
        counts = torch.bincount(data.train.labels, minlength=data.num_classes)
        print(f"warning: total IPC {total} > the {int(counts[short].min())} training images of some classes: "
              "the random-real baseline takes whole classes there (metrics.json: random_real_ipc_capped)",
              file=sys.stderr)


def render_report(config: DistillConfig, metrics: dict) -> str:
    """A short markdown report: stages, final accuracy, the random baseline, pictures."""
    pdd, rnd = metrics["pdd"], metrics["random_real"]
    lines = [f"# PDD run: {config.data.dataset}, {config.method}, {config.stages.num_stages} stages x "
             f"ipc {config.stages.ipc}", "",
             "| stage | ipc | best iteration | val acc % | learned lr | skipped (non-finite) | lr clamped | "
             "test acc after stage % |", "|---|---|---|---|---|---|---|---|"]
    lines[1:1] = report_warnings(metrics)
    per_phase = pdd["per_phase_mean"] if len(pdd["per_phase_mean"]) == len(metrics["stages"]) else [None] * 99
    for k, (s, acc) in enumerate(zip(metrics["stages"], per_phase), start=1):
        lr = f"{s['lr']:.3g}" if s.get("lr") is not None else "-"
        acc_text = f"{100 * acc:.2f}" if acc is not None else "-"
        lines.append(f"| {k} | {s['ipc']} | {s.get('best_iteration')} | {100 * s.get('val_accuracy', 0):.2f} | "
                     f"{lr} | {s.get('skipped_nonfinite', 0)} | {s.get('lr_clamped', 0)} | {acc_text} |")
    pdd_epochs, rnd_epochs = metrics.get("pdd_epochs", "-"), metrics.get("random_real_epochs", "-")
    lines += ["", "| method | total ipc | epochs per net | test accuracy % (mean ± std) | runs |",
              "|---|---|---|---|---|",
              f"| PDD ({config.method}, {pdd['mode']}) | {metrics['total_ipc']} | {pdd_epochs} | "
              f"{100 * pdd['mean']:.2f} ± {100 * pdd['std']:.2f} | {pdd['runs']} |",
              f"| random real images ({rnd['mode']}) | {metrics['total_ipc']} | {rnd_epochs} | "
              f"{100 * rnd['mean']:.2f} ± {100 * rnd['std']:.2f} | {rnd['runs']} |", "",
              f"Equal budget: the random real images train {rnd_epochs} epochs in one union phase, as many as "
              f"the PDD set's {len(pdd['per_phase_mean'])} phase(s) together ({pdd_epochs}).", "",
              f"Protocol: {metrics['protocol']}.", "",
              f"Random real images: {metrics.get('random_real_protocol', metrics['protocol'])}.", "",
              "![accuracy vs stage](accuracy_vs_stage.png)", ""]
    lines += [f"![stage {k}](synthetic/stage_{k}.png)" for k in range(1, len(metrics["stages"]) + 1)]
    return "\n".join(lines) + "\n"


def report_warnings(metrics: dict) -> list[str]:
    """Lines under the report's title: a diverged run, experts a stage matched without."""
    lines = []
    if metrics.get("diverged"):
        lines += ["", "**Diverged**: " + "; ".join(metrics["diverged"]) + ". The accuracies below are those "
                  "of a diverged run, not a result (exit status 3)."]
    for k, stage in enumerate(metrics["stages"], start=1):
        if stage.get("skipped_experts"):
            lines += ["", f"Stage {k} matched without damaged expert(s) "
                      f"{', '.join(map(str, stage['skipped_experts']))} (mtt.skip_damaged_experts=true)."]
    return lines


__all__ = ["run_pdd", "evaluate_and_report", "render_report"]
