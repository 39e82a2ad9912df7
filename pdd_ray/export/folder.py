"""``--to folder``: class folders of PNGs in pixel space, readable by torchvision's ``ImageFolder``.

    OUT/000_T-shirt_top/s1_000000.png ...   one folder per class, named <label>_<class name>
    OUT/export.json                         preprocessing, class names, the set's manifest

Folder names start with the zero-padded label, so ``ImageFolder``'s sorted ``class_to_idx``
gives every image its pdd-ray label. PNGs round pixels to 8 bits: a network trained on
them sees slightly different images than on ``--to pt`` / the set itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from pdd_ray.export.rows import class_name, rows_of, to_uint8
from pdd_ray.export.tree import write_tree

DEFAULT_NAME = "synthetic_folder"


def folder_name(synset, label: int) -> str:
    """``<label>_<name>`` with the label zero-padded and the name made safe as a path part."""
    width = len(str(max(synset.num_classes - 1, 0)))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", class_name(synset, label)).strip("._") or "class"
    return f"{label:0{max(width, 3)}d}_{safe}"


def export_folder(synset, manifest: dict, out: Path, decoded: bool = True) -> Path:
    """Write one PNG per row into class folders under the new directory ``out``."""
    rows = rows_of(synset, decoded)
    files = {}
    for i, (pixels, label, stage) in enumerate(zip(rows.pixels, rows.label.tolist(), rows.stage.tolist())):
        name = f"{folder_name(synset, label)}/s{stage}_{i:06d}.png"
        files[name] = lambda tmp, p=pixels: Image.fromarray(to_uint8(p)).save(tmp, format="PNG")
    return write_tree(out, files, {"format": "pdd-ray/export-folder", "decoded": decoded, "space": "pixels",
                                   "classes": [folder_name(synset, c) for c in range(synset.num_classes)],
                                   "manifest": manifest})
