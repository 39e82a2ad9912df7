"""Generic ``root/<split>/<class_name>/*.png|jpg|jpeg|bmp`` image trees.

Class indices are the sorted class-folder names of the train split, so that
train and test agree even when a test folder lacks a class; a test class
unknown to train is an error. Every image
is resized to one common size (default: the first train image's size).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from pdd_ray.data.splits import RawSplit
from pdd_ray.errors import UserError
from pdd_ray.progress import progress_bar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# Below this many files decoding is instant and a progress bar is only noise.
PROGRESS_MIN_FILES = 2000


def natural_key(path: Path) -> tuple:
    """Sort key that orders ``img_2`` before ``img_10``."""
    # re.split with a group alternates text, number, text...; so equal positions hold equal types.
    parts = re.split(r"(\d+)", Path(path).name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _decode_one(path: Path, mode: str, size: tuple[int, int] | None, resize: bool) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != size:
                if not resize:
                    raise UserError(f"{path}: image is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}")
                img = img.resize(size, Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except UserError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise UserError(f"cannot decode image {path}: {e}") from e
    return arr[:, :, None] if arr.ndim == 2 else arr


def decode_images(
    paths: Sequence[Path],
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
    resize: bool = True,
    desc: str = "decoding images",
) -> torch.Tensor:
    """Decode image files in a thread pool into uint8 [N, C, H, W].

    ``size`` is (width, height); images of another size are resized, or
    rejected when ``resize`` is False. ``None`` means the first image's size.
    """
    if not paths:
        raise UserError("no images to decode")
    first = _decode_one(Path(paths[0]), mode, size, resize)
    h, w, c = first.shape
    out = np.empty((len(paths), h, w, c), dtype=np.uint8)
    out[0] = first

    def fill(i: int) -> None:
        out[i] = _decode_one(Path(paths[i]), mode, (w, h), resize)

    # PIL releases the GIL while decoding, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        jobs = pool.map(fill, range(1, len(paths)))
        for _ in progress_bar(jobs, total=len(paths) - 1, desc=desc, unit="file",
                              disable=len(paths) < PROGRESS_MIN_FILES, leave=False):
            pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def is_image(path: Path) -> bool:
    """Whether ``path`` is a file with one of the supported image extensions."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def class_dirs(split_dir: Path) -> list[Path]:
    """Class folders of one split, sorted by name (hidden folders ignored)."""
    return sorted((p for p in Path(split_dir).iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def class_names(root: Path) -> tuple[str, ...]:
    """The class list: sorted folder names of ``root/train`` (train defines the classes)."""
    train = Path(root) / "train"
    if not train.is_dir():
        raise UserError(f"missing {train} (its class folders define the classes)")
    names = tuple(p.name for p in class_dirs(train))
    if not names:
        raise UserError(f"{train} has no class folders")
    return names


def list_files(root: Path, split: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(image paths, labels, class names) of one split, in a stable order."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"missing split folder {split_dir}")
    names = class_names(root)
    index = {n: i for i, n in enumerate(names)}
    paths, labels = [], []
    for d in class_dirs(split_dir):
        if d.name not in index:
            raise UserError(f"{d}: class '{d.name}' does not exist in the train split")
        files = sorted((p for p in d.iterdir() if is_image(p)), key=natural_key)
        paths += files
        labels += [index[d.name]] * len(files)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}")
    return paths, labels, names


def _as_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    # Users say "32" or "(height, width)"; PIL wants (width, height).
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(w), int(h))


def reference_size(root: Path) -> tuple[int, int]:
    """(width, height) of the first train image: the default common size."""
    first = list_files(root, "train")[0][0]
    try:
        with Image.open(first) as img:
            return img.size
    except Exception as e:
        raise UserError(f"cannot decode image {first}: {e}") from e


def load_image_folder(
    root: Path,
    split: str,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> RawSplit:
    """Load ``root/<split>/<class>/*`` resized to ``image_size`` ((H, W) or an int) as RGB or grayscale."""
    paths, labels, names = list_files(root, split)
    size = _as_size(image_size) or reference_size(root)
    images = decode_images(paths, mode="L" if grayscale else "RGB", size=size, desc=f"decoding {split} images")
    return RawSplit(images=images, labels=torch.tensor(labels, dtype=torch.int64), class_names=names)
