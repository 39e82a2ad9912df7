"""``--to pt``: tensors in the layout MTT and DATM save and DD-Ranking's demos load.

    OUT/images_best.pt   float32 [N, C, H, W], network space (the set's normalisation or ZCA)
    OUT/labels_best.pt   int64 [N]
    OUT/lr_best.pt       0-d float32: the last stage's learned lr (absent when the set has none)
    OUT/stages.pt        int64 [N]: each row's stage (1-based), for progressive training
    OUT/stage_lrs.pt     float32 [P]: every stage's learned lr (NaN where none)
    OUT/export.json      what the files hold: preprocessing, class names, the set's manifest

Plain tensors only, so ``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pdd_ray.export.rows import rows_of
from pdd_ray.export.tree import write_tree

DEFAULT_NAME = "synthetic_pt"


def export_torch(synset, manifest: dict, out: Path, decoded: bool = True) -> Path:
    """Write the tensor files of ``synset`` into the new directory ``out``."""
    rows = rows_of(synset, decoded)
    lrs = [s.lr for s in synset.stages]
    tensors = {"images_best.pt": rows.values.contiguous(), "labels_best.pt": rows.label,
               "stages.pt": rows.stage,
               "stage_lrs.pt": torch.tensor([math.nan if lr is None else lr for lr in lrs], dtype=torch.float32)}
    if lrs and lrs[-1] is not None:
        tensors["lr_best.pt"] = torch.tensor(lrs[-1], dtype=torch.float32)
    files = {name: (lambda tmp, t=tensor: torch.save(t, tmp)) for name, tensor in tensors.items()}
    return write_tree(out, files, {"format": "pdd-ray/export-pt", "decoded": decoded,
                                   "space": "network (apply the manifest's preprocessing to real images)",
                                   "files": sorted(tensors), "manifest": manifest})
