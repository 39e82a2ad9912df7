"""IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.

Layout: two zero bytes, a type byte, a dimension count, then one big-endian
uint32 per dimension, then the values (big-endian). We read the files
ourselves instead of using torchvision's MNIST class, whose md5 check
rejects Debian's recompressed copies of the very same data.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from pdd_ray.data.splits import RawSplit
from pdd_ray.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# File-name prefix used by the MNIST family for each of our splits.
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when it starts with the gzip magic bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    # Detect by content, not by name: Debian ships .gz files, others unpack them.
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"corrupt gzip file {path}: {e}") from e


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian numpy array of the stored shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dtype = _DTYPES.get(data[2])
    if dtype is None:
        raise UserError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(f"{path}: IDX header promises {expected} data bytes for shape {shape}, file has {len(data) - header}")
    values = np.frombuffer(data, dtype=dtype, offset=header)
    # astype copies into native byte order, which also makes the array writable for torch.
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a numpy array."""
    return parse_idx(read_bytes(Path(path)), path)


def read_idx_shape(path: Path | str) -> tuple[int, ...]:
    """Only the shape from an IDX header (cheap for raw files, gunzips .gz ones)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
        with (gzip.open if gzipped else open)(path, "rb") as f:
            fixed = f.read(4)
            if len(fixed) < 4 or fixed[0] != 0 or fixed[1] != 0:
                raise UserError(f"{path} is not an IDX file (bad magic number)")
            dims = f.read(4 * fixed[3])
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX header of {path}: {e}") from e
    if len(dims) < 4 * fixed[3]:
        raise UserError(f"{path}: truncated IDX header")
    return tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))


def idx_file_names(split: str) -> tuple[str, str]:
    """Base names (without .gz) of the image and label files of an MNIST-style split."""
    if split not in _SPLIT_PREFIX:
        raise UserError(f"unknown split '{split}'; choose train or test")
    prefix = _SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_idx_file(folder: Path, base: str) -> Path | None:
    """``folder/base`` or ``folder/base.gz``, whichever exists (raw first)."""
    for name in (base, base + ".gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def split_files(folder: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of ``split`` in ``folder``; UserError if absent."""
    found = []
    for base in idx_file_names(split):
        path = find_idx_file(folder, base)
        if path is None:
            raise UserError(f"missing {base} (or {base}.gz) in {folder}")
        found.append(path)
    return found[0], found[1]


def load_idx_split(folder: Path, split: str, class_names: tuple[str, ...]) -> RawSplit:
    """Load an MNIST-style split from ``folder`` as uint8 [N, 1, H, W] images and int64 labels."""
    images_path, labels_path = split_files(Path(folder), split)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise UserError(f"{labels_path}: expected a 1-D label array, got shape {labels.shape}")
    if len(labels) != len(images):
        raise UserError(f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images")
    return RawSplit(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=tuple(class_names),
    )
