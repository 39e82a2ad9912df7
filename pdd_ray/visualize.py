"""Pictures people would rather look at than read: image grids and accuracy plots (PNG).

Each picture is built by a ``*_figure`` function that returns the matplotlib Figure (what
tests inspect) and written by the matching ``save_*`` function.

Image grids (``stage_<i>.png``): up to ``DETAIL_CLASSES`` classes, one row per class with
every image of the class. With more classes (CIFAR-100, Tiny ImageNet) one row per class
would make a picture thousands of pixels tall whose tiles shrink to dots when viewed, so the
same single file holds two panels instead: the first ``DETAIL_CLASSES`` classes with every
image, and an overview of the first image of every class, ``OVERVIEW_COLUMNS`` to a row.
Every class appears, every tile keeps about ``TILE_INCHES`` of the page, and the file keeps
its name (reports, trackers and resumed runs rely on ``stage_<i>.png``).

Accuracy plots: stages (or phases) are whole numbers, so the x ticks are; each curve carries
error bars (std over evaluation runs); references such as random real images are drawn as
horizontal lines (or one value per stage) in the legend; the y axis starts at 0, or at the
multiple of 10 at or below chance accuracy, so a small difference is not magnified into a
steep line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from pdd_ray.provenance import atomic_write  # noqa: E402

DPI = 120
DETAIL_CLASSES = 20  # up to this many classes: one row per class (beyond: + an overview of every class)
OVERVIEW_COLUMNS = 20  # tiles per overview row: the class of a tile is the row's first class + its column
TILE_INCHES = 0.5  # page space per tile (60 px at DPI), margins and labels aside
EXPLICIT_TICKS = 20  # up to this many stages every stage gets a tick; beyond, integer ticks chosen by matplotlib


# ------------------------------------------------------------------ image grids

def save_image_grid(pixels: torch.Tensor, labels: torch.Tensor, path: str | Path,
                    class_names: tuple[str, ...] = (), title: str = "") -> Path:
    """Write ``image_grid_figure`` as a PNG at ``path``."""
    return _save(image_grid_figure(pixels, labels, class_names, title), path)


def image_grid_figure(pixels: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...] = (),
                      title: str = "") -> Figure:
    """[0,1] images (values outside are clipped for display only) as a grid (module docstring).

    Up to ``DETAIL_CLASSES`` classes: one row per class, every image. More: those first
    classes so, above an overview holding the first image of every class.
    """
    pixels, labels = pixels.detach().cpu().clamp(0, 1), labels.cpu()
    classes = labels.unique().tolist()
    detail = classes[:DETAIL_CLASSES]
    per_row = max(int((labels == c).sum()) for c in detail)
    if len(classes) <= DETAIL_CLASSES:  # the layout small sets have always had
        fig, ax = plt.subplots(figsize=(max(3.0, TILE_INCHES * per_row + 1.5), max(2.0, TILE_INCHES * len(classes))))
        _draw_class_rows(ax, pixels, labels, classes, per_row, class_names)
        ax.set_title(title, fontsize=9)
        return fig
    overview_rows = math.ceil(len(classes) / OVERVIEW_COLUMNS)
    width = TILE_INCHES * max(per_row, OVERVIEW_COLUMNS) + 1.5
    height = TILE_INCHES * (len(detail) + overview_rows) + 1.5  # + two panel titles and the column labels
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, height),
                                      gridspec_kw={"height_ratios": [len(detail), overview_rows]})
    _draw_class_rows(top, pixels, labels, detail, per_row, class_names)
    top.set_title(f"{title}\nclasses {_name(detail[0], class_names)} .. {_name(detail[-1], class_names)} "
                  f"(first {len(detail)} of {len(classes)}): every image", fontsize=9)
    _draw_overview(bottom, pixels, labels, classes)
    bottom.set_title(f"all {len(classes)} classes, first image of each: class = row label + column", fontsize=9)
    return fig


def _draw_class_rows(ax, pixels: torch.Tensor, labels: torch.Tensor, classes: list[int], per_row: int,
                     class_names: tuple[str, ...]) -> None:
    """One row per class in ``classes``: its images, padded with white to ``per_row``; rows named."""
    rows = [_pad(pixels[labels == c], per_row) for c in classes]
    _show(ax, torch.cat(rows), per_row, pixels.shape[1])
    ax.set_xticks([])
    ax.set_yticks(_centres(len(classes), pixels.shape[2]))
    ax.set_yticklabels([_name(c, class_names) for c in classes], fontsize=7)


def _draw_overview(ax, pixels: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> None:
    """The first image of every class, ``OVERVIEW_COLUMNS`` to a row; rows labelled by their first class."""
    firsts = torch.stack([pixels[labels == c][0] for c in classes])
    rows = math.ceil(len(classes) / OVERVIEW_COLUMNS)
    _show(ax, _pad(firsts, rows * OVERVIEW_COLUMNS), OVERVIEW_COLUMNS, pixels.shape[1])
    # Class indices, not names: a hundred names do not fit beside a tile.
    ax.set_yticks(_centres(rows, pixels.shape[2]))
    ax.set_yticklabels([str(classes[r * OVERVIEW_COLUMNS]) for r in range(rows)], fontsize=7)
    ax.set_xticks(_centres(OVERVIEW_COLUMNS, pixels.shape[3]))
    ax.set_xticklabels([f"+{k}" for k in range(OVERVIEW_COLUMNS)], fontsize=6)


def _pad(images: torch.Tensor, count: int) -> torch.Tensor:
    """``images`` followed by white tiles up to ``count``."""
    return torch.cat([images, torch.ones(count - len(images), *images.shape[1:])])


def _show(ax, tiles: torch.Tensor, columns: int, channels: int) -> None:
    grid = make_grid(tiles, nrow=columns, padding=1, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if channels == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")


def _centres(count: int, size: int) -> list[float]:
    """Pixel centres of ``count`` tiles of ``size`` along one axis of a ``make_grid`` (1 px padding)."""
    cell = size + 1
    return [1 + cell * (i + 0.5) for i in range(count)]


def _name(c: int, class_names: tuple[str, ...]) -> str:
    return class_names[c] if c < len(class_names) else str(c)


# ------------------------------------------------------------------ accuracy plots

@dataclass(frozen=True)
class Reference:
    """A reference accuracy (fractions): one value, a horizontal line; or one per stage, a dashed line."""

    mean: float | list[float]
    std: float | list[float] | None = None


def save_accuracy_plot(curves: dict[str, list[float]], path: str | Path, xlabel: str = "stage",
                       title: str = "", errors: dict[str, list[float]] | None = None,
                       metadata: dict[str, str] | None = None, references: dict[str, Reference] | None = None,
                       chance: float | None = None) -> Path:
    """Write ``accuracy_figure`` as a PNG at ``path``.

    ``metadata``: PNG text chunks (config, seed, versions, protocol) carried by the file itself.
    """
    return _save(accuracy_figure(curves, xlabel, title, errors, references, chance), path, metadata)


def accuracy_figure(curves: dict[str, list[float]], xlabel: str = "stage", title: str = "",
                    errors: dict[str, list[float]] | None = None, references: dict[str, Reference] | None = None,
                    chance: float | None = None) -> Figure:
    """Test accuracy (%) against stage 1..n (or any whole-numbered step), one line per named curve.

    ``errors``: per-curve std over evaluation runs (error bars). ``references``: accuracies to
    compare against (``Reference``). ``chance``: chance accuracy (1 / classes), drawn dotted and
    the floor of the y axis. All accuracies are fractions; the axis shows percent.
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    stages = max((len(ys) for ys in curves.values()), default=1)
    lows = []
    for name, ys in curves.items():
        err = (errors or {}).get(name) or [0.0] * len(ys)
        ax.errorbar(range(1, len(ys) + 1), [100 * y for y in ys], yerr=[100 * e for e in err],
                    marker="o", capsize=3, label=name)
        lows += [y - e for y, e in zip(ys, err)]
    for k, (name, ref) in enumerate((references or {}).items()):
        lows += _draw_reference(ax, name, ref, f"C{len(curves) + k}")  # a colour no curve has
    if chance is not None:
        ax.axhline(100 * chance, color="gray", linestyle=":", linewidth=1, label=f"chance ({100 * chance:.3g}%)")
    _integer_stage_axis(ax, stages)
    ax.set_ylim(y_floor(lows, chance), 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def _draw_reference(ax, name: str, ref: Reference, color: str) -> list[float]:
    """Draw one reference (a horizontal line and its ±std band, or a dashed per-stage line); its low points."""
    if isinstance(ref.mean, (int, float)):
        ax.axhline(100 * ref.mean, color=color, linestyle="--", linewidth=1.2, label=name)
        std = float(ref.std or 0.0)
        if std > 0:
            ax.axhspan(100 * (ref.mean - std), 100 * (ref.mean + std), color=color, alpha=0.12)
        return [ref.mean - std]
    std = list(ref.std) if ref.std is not None else [0.0] * len(ref.mean)
    ax.errorbar(range(1, len(ref.mean) + 1), [100 * m for m in ref.mean], yerr=[100 * s for s in std],
                color=color, linestyle="--", marker="s", markersize=3, capsize=2, label=name)
    return [m - s for m, s in zip(ref.mean, std)]


def _integer_stage_axis(ax, stages: int) -> None:
    """Ticks on whole stages only (there is no stage 1.5)."""
    if stages <= EXPLICIT_TICKS:
        ax.set_xticks(range(1, stages + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, stages + 0.5)


def y_floor(lows: list[float], chance: float | None) -> float:
    """The y axis' lower end (percent): 0, or with a chance level the multiple of 10 at or below both it and
    every plotted point (CIFAR-10: 10; 100 classes: 0). Never auto-zoomed onto the curves."""
    if chance is None:
        return 0.0
    lowest = min([chance, *lows])
    return max(0.0, 10.0 * math.floor(10 * lowest + 1e-9))


def png_text(description: str, source: str, record: dict, keys=("config", "seed", "versions", "precision")) -> dict:
    """PNG text chunks: the protocol in words, the command, and the provenance keys of ``record`` it has."""
    return {"Description": description, "Source": source,
            "Comment": json.dumps({k: record[k] for k in keys if k in record}, default=str)}


def _save(fig, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata=metadata))
    plt.close(fig)
    return out
