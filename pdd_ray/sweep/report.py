"""Sweep results: one row per trial, results.csv / results.json, a printed table, the stages x IPC heatmap.

Rows are read from the trials' run directories, so a finished or a partial
sweep can be tabulated again at any time without Ray.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from pdd_ray.provenance import atomic_write, now, versions, write_json
from pdd_ray.sweep.trial import RESULT_FILE, TRIAL_FILE

# Shown as their own columns; never repeated among the parameter columns.
SHAPE_KEYS = ("stages.num_stages", "stages.ipc")
CSV_TAIL = ["num_stages", "ipc", "total_ipc", "epochs_per_net", "val_accuracy", "test_accuracy", "status", "run_dir"]


def collect_rows(work_dir: str | Path) -> list[dict]:
    """One row per trial directory under WORK/trials: ``done`` with a result file, else ``incomplete``."""
    rows = []
    for trial_dir in sorted(p for p in (Path(work_dir) / "trials").glob("*") if p.is_dir()):
        record, result = _read(trial_dir / TRIAL_FILE), _read(trial_dir / RESULT_FILE)
        if record is None and result is None:
            continue
        rows.append({**(record or {}), **(result or {}), "status": "done" if result else "incomplete",
                     "run_dir": str(trial_dir)})
    return sort_rows(rows)


def merge_outcomes(rows: list[dict], outcomes: dict[str, dict]) -> list[dict]:
    """Add what Tune knows (``{trial: {params, error, stopped}}``): errors, early stops, trials without a dir."""
    by_name = {row["trial"]: row for row in rows}
    for name, outcome in outcomes.items():
        row = by_name.setdefault(name, {"trial": name, "params": outcome["params"], "status": "incomplete"})
        if outcome.get("error"):
            row.update(status="error", error=outcome["error"])
        elif row["status"] != "done" and outcome.get("stopped"):
            row["status"] = "stopped"  # ended by the scheduler (ASHA) before its final evaluation
    return sort_rows(list(by_name.values()))


def sort_rows(rows: list[dict]) -> list[dict]:
    """Rows ordered by stages, IPC, then name."""
    return sorted(rows, key=lambda r: (r.get("num_stages") or 0, r.get("ipc") or 0, r["trial"]))


def best_row(rows: list[dict], mode: str = "max") -> dict | None:
    """The finished trial with the best validation accuracy (selection never looks at test accuracy)."""
    done = [r for r in rows if r.get("status") == "done" and r.get("val_accuracy") is not None]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda r: r["val_accuracy"])


def param_keys(rows: list[dict]) -> list[str]:
    """Swept keys in first-seen order, without the ones that have their own column."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.get("params", {}) if k not in keys and k not in SHAPE_KEYS]
    return keys


def format_table(rows: list[dict], mode: str = "max") -> str:
    """A fixed-width table, accuracies in %, the best trial by validation marked."""
    keys = param_keys(rows)
    best = best_row(rows, mode)
    header = [*keys, "stages", "ipc", "total", "val %", "test %", "status"]
    body = [[*(_fmt(r.get("params", {}).get(k)) for k in keys), _fmt(r.get("num_stages")), _fmt(r.get("ipc")),
             _fmt(r.get("total_ipc")), _pct(r.get("val_accuracy")), _pct(r.get("test_accuracy")),
             r.get("status", "") + ("  <- best (val)" if r is best else "")] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(cell.rjust(w) if i < len(header) - 1 else cell for i, (cell, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    return "\n".join(lines)


def write_results(work_dir: str | Path, rows: list[dict], sweep: dict, mode: str = "max") -> dict:
    """results.csv, results.json and heatmap.png in WORK (atomic writes); returns the paths."""
    work = Path(work_dir)
    best = best_row(rows, mode)
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
    write_json(work / "results.json", {
        "format": "pdd-ray-sweep-results", "created": now(), "sweep": sweep, "seed": sweep.get("seed"),
        "metric": sweep.get("metric", "val_accuracy"), "mode": mode, "best": best["trial"] if best else None,
        "protocol": protocols[0] if len(protocols) == 1 else protocols, "versions": versions(), "trials": rows})
    atomic_write(work / "results.csv", lambda tmp: _write_csv(tmp, rows))
    paths = {"csv": str(work / "results.csv"), "json": str(work / "results.json")}
    if any(r.get("num_stages") for r in rows):
        paths["heatmap"] = str(save_heatmap(rows, work / "heatmap.png", mode))
    return paths


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = param_keys(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", *keys, *CSV_TAIL])
        for r in rows:
            writer.writerow([r["trial"], *(r.get("params", {}).get(k, "") for k in keys),
                             *("" if r.get(k) is None else r[k] for k in CSV_TAIL)])


def heatmap_cells(rows: list[dict], mode: str = "max") -> dict[tuple[int, int], dict]:
    """(num_stages, ipc) -> the best finished trial (by validation) in that cell."""
    cells: dict[tuple[int, int], dict] = {}
    for row in rows:
        if row.get("status") != "done" or row.get("val_accuracy") is None:
            continue
        key = (row["num_stages"], row["ipc"])
        if key not in cells or best_row([cells[key], row], mode) is row:
            cells[key] = row
    return cells


def save_heatmap(rows: list[dict], path: str | Path, mode: str = "max") -> Path:
    """Accuracy over stages (rows) x per-stage IPC (columns), numbers in the cells, best by validation boxed."""
    import matplotlib
    matplotlib.use("Agg")  # headless: clusters and CI have no display
    import matplotlib.pyplot as plt

    stages = sorted({r["num_stages"] for r in rows if r.get("num_stages")})
    ipcs = sorted({r["ipc"] for r in rows if r.get("ipc")})
    cells = heatmap_cells(rows, mode)
    best = best_row(rows, mode)
    panels = [("val_accuracy", "validation accuracy % (selection)")]
    if any(c.get("test_accuracy") is not None for c in cells.values()):
        panels.append(("test_accuracy", "test accuracy % (reported)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 * len(ipcs) * len(panels) + 2.5, 0.7 * len(stages) + 1.8),
                             squeeze=False)
    for ax, (metric, title) in zip(axes[0], panels):
        _panel(ax, stages, ipcs, cells, metric, title, best)
    fig.suptitle("best by validation boxed; cell = best trial of that shape", fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)


def _panel(ax, stages, ipcs, cells, metric, title, best) -> None:
    grid = [[_value(cells.get((s, i)), metric) for i in ipcs] for s in stages]
    image = ax.imshow([[v if v is not None else math.nan for v in line] for line in grid], cmap="viridis",
                      aspect="auto")
    for y, line in enumerate(grid):
        for x, value in enumerate(line):
            # Dark text on the bright end of viridis, white on the dark end; '-' where no trial finished.
            bright = value is not None and image.norm(value) > 0.6
            ax.text(x, y, "-" if value is None else f"{value:.1f}", ha="center", va="center", fontsize=9,
                    color="gray" if value is None else ("black" if bright else "white"))
    if best is not None and best["num_stages"] in stages and best["ipc"] in ipcs:
        from matplotlib.patches import Rectangle
        y, x = stages.index(best["num_stages"]), ipcs.index(best["ipc"])
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(ipcs)), [str(i) for i in ipcs])
    ax.set_yticks(range(len(stages)), [str(s) for s in stages])
    ax.set_xlabel("images per class per stage")
    ax.set_ylabel("stages")
    ax.set_title(title, fontsize=9)


def _value(row: dict | None, metric: str) -> float | None:
    return None if row is None or row.get(metric) is None else 100 * row[metric]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # absent, or a trial killed while writing it (atomic writes aside)
        return None


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
