"""Fixtures writing tiny datasets in each dataset's exact on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

# ---------------------------------------------------------------- writers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an IDX file (big-endian header and values)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2 did: every str/bytes as a byte string (BINSTRING)."""

    def save_bytes(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_bytes


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle in the style of the original CIFAR files (Python 2, numpy.core)."""
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Old numpy named its module numpy.core; the GLOBAL opcode holds the name as text.
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_jpeg(path: Path, array: np.ndarray) -> None:
    """Write an HWC uint8 array as a JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG")


def decode_like_reader(path: Path, mode: str = "RGB") -> np.ndarray:
    """How PIL decodes a file, as CHW: what a reader must return for it."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert(mode))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@dataclass
class Written:
    """A dataset written to disk and the values it must read back as."""

    root: Path  # the folder holding the files
    parent: Path  # the folder holding ``root``
    images: dict[str, np.ndarray] = field(default_factory=dict)  # split -> uint8 [N, C, H, W]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # split -> int [N]
    class_names: tuple[str, ...] = ()
    files: dict[str, list[Path]] = field(default_factory=dict)  # split -> image files, in reading order
    ids: tuple[str, ...] = ()  # dataset-specific class ids (Tiny-ImageNet wnids)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def idx_encode() -> Callable[[np.ndarray], bytes]:
    """The IDX encoder, for tests that build their own (possibly corrupt) files."""
    return idx_bytes


@pytest.fixture
def pil_decode() -> Callable[..., np.ndarray]:
    """``pil_decode(path, mode='RGB')``: PIL's decoding of a file as CHW uint8."""
    return decode_like_reader


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def write_fashion(folder: Path, gz: bool, n_train: int = 12, n_test: int = 10) -> Written:
    """Four Fashion-MNIST IDX files (28x28) in ``folder``, gzipped or raw."""
    rng = _rng()
    folder.mkdir(parents=True, exist_ok=True)
    out = Written(root=folder, parent=folder.parent)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out.images[split] = images[:, None]
        out.labels[split] = labels.astype(np.int64)
    return out


@pytest.fixture
def make_fashion() -> Callable[..., Written]:
    """``make_fashion(folder, gz, n_train=12, n_test=10)`` writes Fashion-MNIST IDX files."""
    return write_fashion


@pytest.fixture
def fashion_raw(tmp_path) -> Written:
    """Fashion-MNIST as raw (unzipped) IDX files."""
    return write_fashion(tmp_path / "fashion_raw", gz=False)


@pytest.fixture
def fashion_gz(tmp_path) -> Written:
    """Fashion-MNIST as gzipped IDX files (the Debian layout)."""
    return write_fashion(tmp_path / "fashion_gz", gz=True)


# ---------------------------------------------------------------- CIFAR


def _cifar_batch(rng, n: int, label_key: bytes, num_classes: int) -> tuple[dict, np.ndarray, np.ndarray]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, num_classes, size=n)]
    batch = {b"batch_label": b"testing batch", label_key: labels, b"data": data, b"filenames": [b"x.png"] * n}
    return batch, data.reshape(n, 3, 32, 32), np.array(labels, dtype=np.int64)


def _write_cifar(root: Path, files: dict, label_key: bytes, meta: str, meta_dict: dict, names_key: bytes) -> Written:
    rng = _rng()
    root.mkdir(parents=True)
    out = Written(root=root, parent=root.parent)
    num_classes = len(meta_dict[names_key])
    for split, names in files.items():
        parts = []
        for name in names:
            batch, images, labels = _cifar_batch(rng, 4 if split == "train" else 5, label_key, num_classes)
            (root / name).write_bytes(py2_pickle(batch))
            parts.append((images, labels))
        out.images[split] = np.concatenate([p[0] for p in parts])
        out.labels[split] = np.concatenate([p[1] for p in parts])
    (root / meta).write_bytes(py2_pickle(meta_dict))
    out.class_names = tuple(n.decode() for n in meta_dict[names_key])
    return out


@pytest.fixture
def cifar10_dir(tmp_path) -> Written:
    """``cifar-10-batches-py`` with 5 train batches of 4 rows and a test batch of 5."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": 4, b"label_names": names, b"num_vis": 3072}
    return _write_cifar(tmp_path / "cifar-10-batches-py", files, b"labels", "batches.meta", meta, b"label_names")


@pytest.fixture
def cifar100_dir(tmp_path) -> Written:
    """``cifar-100-python`` with train (4 rows), test (5 rows) and meta."""
    fine = [f"class_{i:03d}".encode() for i in range(100)]
    meta = {b"fine_label_names": fine, b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}
    files = {"train": ["train"], "test": ["test"]}
    return _write_cifar(tmp_path / "cifar-100-python", files, b"fine_labels", "meta", meta, b"fine_label_names")


# ---------------------------------------------------------------- Tiny-ImageNet

# Not alphabetical, to prove that wnids.txt (not sorting) defines the class order.
TINY_WNIDS = ("n02124075", "n01443537", "n03444034")
TINY_WORDS = {"n02124075": "Egyptian cat", "n01443537": "goldfish, Carassius auratus", "n03444034": "go-kart"}
TINY_TRAIN_K = (0, 1, 2, 10)  # read back in natural order: _2 before _10


@pytest.fixture
def tiny_dir(tmp_path) -> Written:
    """``tiny-imagenet-200`` with 3 wnids, 4 train JPEGs each and 6 annotated val JPEGs."""
    rng = _rng()
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("".join(w + "\n" for w in TINY_WNIDS))
    extra = "n00000001\tentity\n"  # words.txt covers all of ImageNet, not only our classes
    (root / "words.txt").write_text(extra + "".join(f"{w}\t{TINY_WORDS[w]}\n" for w in TINY_WNIDS))
    out = Written(root=root, parent=tmp_path, class_names=("Egyptian cat", "goldfish", "go-kart"), ids=TINY_WNIDS)
    train_files, train_labels = [], []
    for label, wnid in enumerate(TINY_WNIDS):
        (root / "train" / wnid).mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in TINY_TRAIN_K:
            path = root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG"
            write_jpeg(path, rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
            train_files.append(path)
            train_labels.append(label)
    val_files, val_labels, lines = [], [], []
    for k in range(6):
        path = root / "val" / "images" / f"val_{k}.JPEG"
        write_jpeg(path, rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
        label = (k * 2) % 3
        lines.append(f"val_{k}.JPEG\t{TINY_WNIDS[label]}\t0\t0\t63\t63\n")
        val_files.append(path)
        val_labels.append(label)
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    # The official test split has images but no labels; the reader must ignore it.
    write_jpeg(root / "test" / "images" / "test_0.JPEG", np.zeros((64, 64, 3), np.uint8))
    for split, files, labels in (("train", train_files, train_labels), ("test", val_files, val_labels)):
        out.files[split] = files
        out.labels[split] = np.array(labels, dtype=np.int64)
        out.images[split] = np.stack([decode_like_reader(p) for p in files])
    return out


# ---------------------------------------------------------------- image folder


def write_image_folder(root: Path, sizes: Callable[[int], tuple[int, int]] = lambda i: (8, 6)) -> Written:
    """``root/{train,test}/<class>/*.png`` with 3 classes; ``sizes(i)`` gives image i's (W, H)."""
    rng = _rng()
    out = Written(root=root, parent=root.parent, class_names=("ant", "bee", "cat"))
    counter = 0
    for split, per_class in (("train", 3), ("test", 2)):
        files, labels = [], []
        for label, name in enumerate(out.class_names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in (1, 2, 10)[:per_class]:
                w, h = sizes(counter)
                counter += 1
                path = folder / f"img_{k}.png"
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
                files.append(path)
                labels.append(label)
            (folder / "notes.txt").write_text("not an image")
        out.files[split] = files
        out.labels[split] = np.array(labels, dtype=np.int64)
        decoded = [decode_like_reader(p) for p in files]
        if len({a.shape for a in decoded}) == 1:  # mixed sizes have no single expected array
            out.images[split] = np.stack(decoded)
    return out


@pytest.fixture
def make_image_folder() -> Callable[..., Written]:
    """``make_image_folder(root, sizes=lambda i: (W, H))`` writes an image-folder tree."""
    return write_image_folder


@pytest.fixture
def image_folder_dir(tmp_path) -> Written:
    """An image-folder tree of 8x6 (W x H) PNGs: 3 classes, 3 train and 2 test images each."""
    return write_image_folder(tmp_path / "images")
