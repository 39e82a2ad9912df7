"""What every export writes: one row per image a network trains on, in both spaces.

A multi-formation stage (IDC, factor f) gives f² rows per stored image, the decoded
patches, kept together (``source`` is the stored image within its stage, ``patch`` the
patch, row-major; ``decoded=False`` gives the stored mosaics instead). ``values`` are the
images exactly as the network sees them (the set's normalisation or ZCA); ``pixels`` the
[0, 1] pixel-space view, clipped, which is what PNG files hold (rounded to 8 bits).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pdd_ray.errors import UserError


@dataclass
class Rows:
    """Row-aligned tensors of a whole set (N rows) plus each row's stage lr."""

    stage: torch.Tensor  # int64 [N], 1-based
    source: torch.Tensor  # int64 [N]
    patch: torch.Tensor  # int64 [N]
    label: torch.Tensor  # int64 [N]
    values: torch.Tensor  # float32 [N, C, H, W], network space
    pixels: torch.Tensor  # float32 [N, C, H, W], [0, 1]
    lr: list  # float | None per row

    def __len__(self) -> int:
        return len(self.label)


def rows_of(synset, decoded: bool = True) -> Rows:
    """Every image of ``synset`` (a ``synset.SyntheticSet``) as rows, stage by stage."""
    parts = {name: [] for name in ("stage", "source", "patch", "label", "values")}
    lrs = []
    for k, stage in enumerate(synset.stages, start=1):
        images, labels = stage.training_data() if decoded else (stage.images, stage.labels)
        per_image = len(labels) // max(len(stage.labels), 1)  # factor² when decoded, else 1
        order = torch.arange(len(labels))
        parts["stage"].append(torch.full((len(labels),), k))
        parts["source"].append(order // per_image)  # decode() keeps each stored image's patches together
        parts["patch"].append(order % per_image)
        parts["label"].append(labels.long())
        parts["values"].append(images.float())
        lrs += [stage.lr] * len(labels)
    tensors = {name: torch.cat(chunks) for name, chunks in parts.items()}
    pixels = synset.preprocessor.inverse(tensors["values"]).clamp(0, 1)
    return Rows(**tensors, pixels=pixels, lr=lrs)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """One C x H x W image in [0, 1] -> H x W (grey) or H x W x 3 uint8, rounded to nearest."""
    array = (pixels * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def png_bytes(pixels: torch.Tensor) -> bytes:
    """One C x H x W image in [0, 1] as PNG file bytes (8-bit grey or RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def class_name(synset, label: int) -> str:
    """The class name of ``label`` (its number where the set names fewer classes)."""
    return synset.class_names[label] if label < len(synset.class_names) else str(label)


def check_writable(out: Path, example: str, directory: bool = False) -> None:
    """A UserError unless ``out`` can be created: a writable parent, and no directory (nothing, if ``directory``)."""
    parent = out.parent if str(out.parent) else Path(".")
    if directory and out.exists():
        raise UserError(f"--out {out} already exists; remove it or give a new directory name")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name, e.g. {out / example}")
    if not parent.is_dir():
        raise UserError(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: directory {parent} is not writable")
