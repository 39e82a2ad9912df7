"""The continual run's outputs: ``continual.json``, ``continual.csv`` (method x phase), ``continual.png``, ``report.md``.

Each carries the config, seed, versions, precision and the evaluation protocol
(the CSV in ``#`` comment lines, the PNG in its text chunks). The classic
incremental metrics: *average incremental accuracy*, the mean over phases of
the accuracy after each phase (its std over runs: of each run's average), and
*last-phase accuracy*, the accuracy after the final phase (all classes).
"""

from __future__ import annotations

import csv
import io
import json
import statistics

import torch

from pdd_ray.config import to_dict
from pdd_ray.continual.config import ContinualConfig
from pdd_ray.continual.evaluate import VARIANT, base_protocol
from pdd_ray.continual.layout import ContinualDir
from pdd_ray.continual.split import PhaseSplit
from pdd_ray.provenance import atomic_write, now, versions, write_json
from pdd_ray.visualize import png_text, save_accuracy_plot


def incremental_metrics(phases: list[dict]) -> dict:
    """Average incremental accuracy and last-phase accuracy (means and population stds over runs)."""
    per_run_average = [statistics.fmean(run) for run in zip(*(p["final"] for p in phases))]
    return {"average_incremental": {"mean": statistics.fmean(p["mean"] for p in phases),
                                    "std": statistics.pstdev(per_run_average) if len(per_run_average) > 1 else 0.0},
            "last": {"mean": phases[-1]["mean"], "std": phases[-1]["std"]}}


def protocol_text(config: ContinualConfig) -> str:
    """The evaluation in words: the continual variant, then the per-network protocol."""
    budget = (" Every builder's networks train as many epochs in total as those of the builder with the most "
              "stages (a one-stage memory: one union phase that long)." if config.equal_budget else "")
    return (f"{VARIANT}. The networks: {base_protocol(config).describe()}.{budget} A memory's stage k is the union "
            "of the seen phases' stage k, its lr the mean of their learned lrs. Memories distilled or selected "
            "from the phase's training split (best iterates chosen on the phase's validation split); accuracy on "
            "the test split.")


def precision(config: ContinualConfig) -> dict:
    """Number formats: compute, stored memories, expert snapshots per distillation builder."""
    experts = {b.label: config.run_config(b).experts.dtype for b in config.builders
               if not b.is_coreset and config.run_config(b).base.needs_experts}
    return {"compute": str(torch.get_default_dtype()).replace("torch.", ""), "memory": "float32",
            "expert_snapshots": experts}


def write_outputs(config: ContinualConfig, split: PhaseSplit, entries: dict[str, list], extra: dict) -> dict:
    """Write the four result files and return what ``continual.json`` holds."""
    record = {"variant": VARIANT, "protocol": protocol_text(config), "config": to_dict(config), "seed": config.seed,
              "versions": versions(), "precision": precision(config), "created": now(),
              "class_order": list(split.order), "phases": [list(p) for p in split.phases], **extra,
              "builders": {label: {"phases": phases, **incremental_metrics(phases)}
                           for label, phases in entries.items()}}
    paths = ContinualDir.of(config)
    write_json(paths.results, record)
    atomic_write(paths.table, lambda tmp: tmp.write_text(render_csv(record)))
    save_accuracy_plot({k: [p["mean"] for p in v["phases"]] for k, v in record["builders"].items()}, paths.plot,
                       xlabel="phase", errors={k: [p["std"] for p in v["phases"]] for k, v in record["builders"].items()},
                       title=f"{config.data.dataset}: {len(split.phases)} phases, memory {config.memory.ipc} ipc",
                       metadata=png_text(record["protocol"], "pdd-ray continual", record))
    atomic_write(paths.report, lambda tmp: tmp.write_text(render_report(config, record)))
    return record


def render_csv(record: dict) -> str:
    """One row per method, one mean and one std column per phase, then the incremental metrics."""
    buffer = io.StringIO()
    for key in ("protocol", "seed", "precision", "versions", "config"):
        buffer.write(f"# {key}: {json.dumps(record[key], default=str)}\n")
    phases = len(record["phases"])
    writer = csv.writer(buffer)
    writer.writerow(["method", *[f"phase_{t}_{s}" for t in range(1, phases + 1) for s in ("mean", "std")],
                     "average_incremental_mean", "average_incremental_std", "last_mean", "last_std"])
    for label, b in record["builders"].items():
        cells = [f"{p[s]:.6f}" for p in b["phases"] for s in ("mean", "std")]
        writer.writerow([label, *cells, *(f"{b[m][s]:.6f}" for m in ("average_incremental", "last")
                                          for s in ("mean", "std"))])
    return buffer.getvalue()


def render_report(config: ContinualConfig, record: dict) -> str:
    """A markdown table, accuracy % after each phase (mean ± std over runs), the metrics and the protocol."""
    phases = len(record["phases"])
    lines = [f"# Continual learning: {config.data.dataset}, {phases} phases of "
             f"{len(record['phases'][0])} classes, memory {config.memory.ipc} images per class", "",
             "| method | " + " | ".join(f"phase {t}" for t in range(1, phases + 1)) +
             " | average incremental | last |", "|---" * (phases + 3) + "|"]
    for label, b in record["builders"].items():
        cells = [_pm(p["mean"], p["std"]) for p in b["phases"]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_pm(**b['average_incremental'])} | "
                     f"{_pm(**b['last'])} |")
    lines += ["", "Test accuracy % on the classes seen so far.", "", f"Protocol: {record['protocol']}", "",
              f"Class order: {record['class_order']}", "", f"Precision: {json.dumps(record['precision'])}; "
              f"seed {record['seed']}.", "", "![accuracy vs phase](continual.png)", ""]
    return "\n".join(lines)


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


__all__ = ["incremental_metrics", "protocol_text", "render_csv", "render_report", "write_outputs"]
