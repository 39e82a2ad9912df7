"""Tiny-ImageNet-200 in the official ``tiny-imagenet-200`` layout.

Our "test" split is the official val split: the official test images have
no labels. Class index = line number in ``wnids.txt``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pdd_ray.data.image_folder import decode_images, natural_key
from pdd_ray.data.splits import RawSplit
from pdd_ray.errors import UserError

TINY_DIR = "tiny-imagenet-200"
IMAGE_SIZE = (64, 64)
_JPEG = (".jpeg", ".jpg")


def _read_lines(path: Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    return [line.strip("\r") for line in text.split("\n") if line.strip()]


def read_wnids(folder: Path) -> list[str]:
    """The class wnids in index order, from ``wnids.txt``."""
    path = Path(folder) / "wnids.txt"
    wnids = [line.strip() for line in _read_lines(path)]
    if len(set(wnids)) != len(wnids):
        raise UserError(f"{path} lists a wnid twice")
    return wnids


def read_class_names(folder: Path, wnids: list[str]) -> tuple[str, ...]:
    """Human-readable names (first synonym in ``words.txt``), falling back to the wnid."""
    path = Path(folder) / "words.txt"
    if not path.is_file():
        return tuple(wnids)
    words = {}
    for line in _read_lines(path):
        wnid, _, names = line.partition("\t")
        words[wnid.strip()] = names.split(",")[0].strip()
    return tuple(words.get(w) or w for w in wnids)


def train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """(paths, labels) of ``train/<wnid>/images/*.JPEG``, class by class."""
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        image_dir = Path(folder) / "train" / wnid / "images"
        if not image_dir.is_dir():
            raise UserError(f"missing {image_dir}")
        files = sorted((p for p in image_dir.iterdir() if p.suffix.lower() in _JPEG), key=natural_key)
        paths += files
        labels += [label] * len(files)
    return paths, labels


def val_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """(paths, labels) of ``val/images`` in ``val_annotations.txt`` order."""
    val = Path(folder) / "val"
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    for n, line in enumerate(_read_lines(val / "val_annotations.txt"), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{val / 'val_annotations.txt'} line {n}: expected '<file>\\t<wnid>\\t...' with a wnid from wnids.txt")
        paths.append(val / "images" / fields[0])
        labels.append(index[fields[1]])
    return paths, labels


def split_files(folder: Path, split: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(paths, labels, class names) of ``split`` ('train' or 'test' = official val)."""
    wnids = read_wnids(folder)
    if split == "train":
        paths, labels = train_files(folder, wnids)
    elif split == "test":
        paths, labels = val_files(folder, wnids)
    else:
        raise UserError(f"unknown split '{split}'; choose train or test")
    if not paths:
        raise UserError(f"no {split} images found under {folder}")
    return paths, labels, read_class_names(folder, wnids)


def load_tiny_imagenet(folder: Path, split: str) -> RawSplit:
    """Load a Tiny-ImageNet split as uint8 [N, 3, 64, 64] from the ``tiny-imagenet-200`` folder."""
    paths, labels, names = split_files(Path(folder), split)
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"missing image {missing}")
    images = decode_images(paths, mode="RGB", size=IMAGE_SIZE, resize=False, desc=f"decoding tiny-imagenet {split}")
    return RawSplit(images=images, labels=torch.tensor(labels, dtype=torch.int64), class_names=names)
