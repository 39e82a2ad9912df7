"""Checks on a synthetic set read from disk, before anything trains on it or exports it.

A set may come from someone else, so its manifest and tensors are not trusted:
without these checks a wrong shape is a traceback deep in a network, a label
past the last class a CUDA assert, and NaN images a silent chance accuracy.
Every problem is one line naming the file and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pdd_ray.errors import UserError

# Sane limits: far above any dataset pdd-ray knows (Tiny-ImageNet: 200 classes, 64x64, 3 channels).
MAX_CLASSES = 100_000
MAX_SIDE = 4096
MAX_CHANNELS = 16
MAX_FACTOR = 8  # multi-formation factor (IDC uses 2): factor² patches per stored image


def check_manifest(manifest: dict, directory: Path) -> None:
    """The manifest's own numbers: classes, image shape, and each stage's count, lr and factor."""
    where = directory / "manifest.json"
    num_classes = manifest.get("num_classes")
    _require(_is_int(num_classes) and 1 <= num_classes <= MAX_CLASSES,
             f"{where}: num_classes must be an integer in 1..{MAX_CLASSES}, got {num_classes!r}")
    names = manifest.get("class_names")
    _require(isinstance(names, list) and len(names) == num_classes,
             f"{where}: class_names must list {num_classes} names")
    shape = manifest.get("image_shape")
    _require(isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) and s >= 1 for s in shape)
             and shape[0] <= MAX_CHANNELS and max(shape[1:]) <= MAX_SIDE,
             f"{where}: image_shape must be [C, H, W] with C <= {MAX_CHANNELS} and H, W <= {MAX_SIDE}, "
             f"got {shape!r}")
    stages = manifest.get("stages")
    _require(isinstance(stages, list) and stages and all(isinstance(e, dict) for e in stages),
             f"{where}: stages must be a non-empty list of entries")
    for k, entry in enumerate(stages, start=1):
        check_stage_entry(entry, k, where)


def check_stage_entry(entry: dict, k: int, where: Path) -> None:
    """One stage entry: a count, an lr that is None or finite and > 0, a small positive integer factor."""
    count, lr, factor = entry.get("count"), entry.get("lr"), entry.get("factor", 1)
    _require(_is_int(count) and count >= 1, f"{where}: stage {k} count must be a positive integer, got {count!r}")
    _require(lr is None or (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr)
                            and lr > 0), f"{where}: stage {k} lr must be finite and > 0 (or null), got {lr!r}")
    _require(_is_int(factor) and 1 <= factor <= MAX_FACTOR,
             f"{where}: stage {k} factor must be an integer in 1..{MAX_FACTOR}, got {factor!r}")


def check_stage_tensors(tensors: dict, entry: dict, manifest: dict, path: Path) -> None:
    """A stage file against its manifest entry: shapes, count, label range, finite images."""
    _require(set(tensors) >= {"images", "labels"}, f"{path}: needs tensors 'images' and 'labels', has "
                                                   f"{sorted(tensors)}")
    images, labels = tensors["images"], tensors["labels"]
    shape = tuple(manifest["image_shape"])
    _require(images.is_floating_point() and images.dim() == 4 and tuple(images.shape[1:]) == shape,
             f"{path}: images must be float [n, {', '.join(map(str, shape))}] (the manifest's image_shape), "
             f"got {images.dtype} {list(images.shape)}")
    _require(labels.dtype == torch.int64 and labels.dim() == 1,
             f"{path}: labels must be int64 [n], got {labels.dtype} {list(labels.shape)}")
    _require(len(images) == len(labels) == entry["count"],
             f"{path}: {len(images)} images and {len(labels)} labels, manifest count {entry['count']}")
    classes = manifest["num_classes"]
    _require(bool(((labels >= 0) & (labels < classes)).all()),
             f"{path}: labels must lie in [0, {classes}), found {int(labels.min())}..{int(labels.max())}")
    _require(bool(torch.isfinite(images).all()), f"{path}: images hold NaN or inf values")


def check_preprocess(tensors: dict, manifest: dict, path: Path) -> None:
    """mean/std for the set's channels (one value, or one per channel)."""
    channels = manifest["image_shape"][0]
    for key in ("mean", "std"):
        value = tensors.get(key)
        _require(value is not None and value.numel() in (1, channels) and bool(torch.isfinite(value).all()),
                 f"{path}: '{key}' must hold 1 or {channels} finite values")
    _require(bool((tensors["std"] != 0).all()), f"{path}: 'std' must not be 0")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


__all__ = ["check_manifest", "check_stage_tensors", "check_preprocess", "MAX_FACTOR"]
