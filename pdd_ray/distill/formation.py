"""IDC multi-formation (Kim et al. 2022): one stored image holds a factor x factor grid of smaller images.

A stored image of size H x W is cut into ``factor²`` patches of ``ceil(H/factor)`` x
``ceil(W/factor)`` pixels (row-major), and every patch is upsampled back to H x W with
bilinear interpolation. With the same storage budget a synthetic set therefore trains on
``factor²`` times as many (lower-resolution) examples. Everything here is plain torch and
differentiable, so distillation can optimise the stored pixels through the decoding, and
evaluation can decode a finished set without importing the distillation machinery.

Sizes that ``factor`` does not divide are padded on the bottom/right with zeros (the mean
of normalised data) before cutting, and ``encode_init`` crops the same padding away.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(images: torch.Tensor, factor: int) -> None:
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"multi-formation factor must be an integer >= 1, got {factor!r}")
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if factor > min(h, w):
        raise ValueError(f"factor {factor} is larger than the {h}x{w} image")


def patch_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Side lengths of one patch: ``ceil(size / factor)``."""
    return math.ceil(height / factor), math.ceil(width / factor)


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[n, C, H, W] stored images -> [n*factor², C, H, W] decoded training images.

    Output row ``i*factor² + r*factor + c`` is patch (row r, column c) of stored image i,
    upsampled (bilinear, align_corners=False) to H x W. ``factor == 1`` returns the input.
    """
    _check(images, factor)
    if factor == 1:
        return images
    n, ch, h, w = images.shape
    ph, pw = patch_size(h, w, factor)
    x = images
    if ph * factor != h or pw * factor != w:
        x = F.pad(x, (0, pw * factor - w, 0, ph * factor - h))
    # [n, C, f*ph, f*pw] -> [n, C, f, ph, f, pw] -> [n, f(row), f(col), C, ph, pw]
    patches = x.reshape(n, ch, factor, ph, factor, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n * factor * factor, ch, ph, pw)
    return F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Labels matching ``decode``: each stored image's label repeated ``factor²`` times in a row."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"multi-formation factor must be an integer >= 1, got {factor!r}")
    return labels if factor == 1 else labels.repeat_interleave(factor * factor)


INIT_MODES = ("nearest", "bilinear")


def encode_init(real: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """IDC's initialisation: [n*factor², C, H, W] real images -> [n, C, H, W] stored images.

    Every consecutive group of ``factor²`` images is downsampled to one patch each and tiled
    row-major into one stored image, so that ``decode`` of the result gives back those images
    at the lower resolution. ``mode``: ``nearest`` as IDC's ``init_type='mix'``
    (``F.interpolate``'s default; at factor 2 it keeps every other pixel), or ``bilinear``
    (antialiased, smoother).
    """
    if mode not in INIT_MODES:
        raise ValueError(f"encode_init mode must be one of {', '.join(INIT_MODES)}, got {mode!r}")
    _check(real, factor)
    if factor == 1:
        return real
    total, ch, h, w = real.shape
    per_image = factor * factor
    if total % per_image:
        raise ValueError(f"encode_init needs a multiple of factor²={per_image} images, got {total}")
    n = total // per_image
    ph, pw = patch_size(h, w, factor)
    if mode == "nearest":
        small = F.interpolate(real, size=(ph, pw), mode="nearest")
    else:
        small = F.interpolate(real, size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)
    # [n*f*f, C, ph, pw] -> [n, f(row), f(col), C, ph, pw] -> [n, C, f, ph, f, pw]
    tiled = small.reshape(n, factor, factor, ch, ph, pw).permute(0, 3, 1, 4, 2, 5)
    tiled = tiled.reshape(n, ch, factor * ph, factor * pw)
    return tiled[..., :h, :w].contiguous()


__all__ = ["INIT_MODES", "decode", "decode_labels", "encode_init", "patch_size"]
