"""Pictures people would rather look at than read: image grids and accuracy plots (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from pdd_ray.provenance import atomic_write  # noqa: E402


def save_image_grid(pixels: torch.Tensor, labels: torch.Tensor, path: str | Path,
                    class_names: tuple[str, ...] = (), title: str = "") -> Path:
    """One row per class of [0,1] images (values outside are clipped for display only)."""
    pixels, labels = pixels.detach().cpu().clamp(0, 1), labels.cpu()
    classes = labels.unique().tolist()
    per_row = int(torch.bincount(labels).max())
    rows = []
    for c in classes:
        imgs = pixels[labels == c]
        pad = torch.ones(per_row - len(imgs), *imgs.shape[1:])
        rows.append(torch.cat([imgs, pad]))
    grid = make_grid(torch.cat(rows), nrow=per_row, padding=1, pad_value=1.0)
    height = max(2.0, 0.5 * len(classes))
    fig, ax = plt.subplots(figsize=(max(3.0, 0.5 * per_row + 1.5), height))
    ax.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if pixels.shape[1] == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    cell = pixels.shape[2] + 1
    ax.set_yticks([1 + cell * (i + 0.5) for i in range(len(classes))])
    ax.set_yticklabels([class_names[c] if c < len(class_names) else str(c) for c in classes], fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_accuracy_plot(curves: dict[str, list[float]], path: str | Path, xlabel: str = "stage",
                       title: str = "", errors: dict[str, list[float]] | None = None,
                       metadata: dict[str, str] | None = None) -> Path:
    """Accuracy (%) against stage (or any step), one line per named curve.

    ``metadata``: PNG text chunks (config, seed, versions, protocol) carried by the file itself.
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, ys in curves.items():
        xs = list(range(1, len(ys) + 1))
        err = (errors or {}).get(name)
        ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * e for e in err] if err else None,
                    marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path, metadata)


def _save(fig, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, metadata=metadata))
    plt.close(fig)
    return out
