"""The dataset registry: what each dataset is, where its files live, how to read them.

``image_folder`` is the one dataset whose shape is not known in advance: its
spec leaves channels / image_size / num_classes / mean / std as ``None``, and
``complete_spec`` fills them from the loaded train split (mean/std are the
per-channel statistics of that train split, in [0, 1] units).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pdd_ray.data import cifar, idx, image_folder, tiny_imagenet
from pdd_ray.data.splits import RawSplit
from pdd_ray.errors import UserError
from pdd_ray.registry import Registry

SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the engine needs to know about one dataset.

    ``None`` in channels / image_size / num_classes / mean / std / counts means
    "depends on the data" (only ``image_folder``); see ``complete_spec``.
    """

    name: str
    channels: int | None
    image_size: tuple[int, int] | None  # (height, width)
    num_classes: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    zca: bool  # the reference MTT code ZCA-whitens CIFAR-10/100 only
    default_roots: tuple[str, ...]  # searched in order; "~" is expanded at search time
    how_to_get: str
    reader: Callable[..., RawSplit]  # reader(data_folder, split, **options)
    counter: Callable[[Path, str], int]  # cheap example count of a split, for `data info`
    # Files/folders (relative to the data folder) that must exist; "a|b" means either.
    required: tuple[str, ...]
    # Sub-folders of a given root that may hold the files (so a parent folder works too).
    folder_names: tuple[str, ...] = ()
    train_count: int | None = None
    test_count: int | None = None
    download: Callable[[Path], None] | None = None  # download(dest_dir), may raise anything
    options: tuple[str, ...] = ()  # extra keyword arguments the reader accepts
    # Sub-folders whose file trees the reader reads besides the folder's own files (the decode cache's digest).
    source_dirs: tuple[str, ...] = ()


DATASETS: Registry[DatasetSpec] = Registry("dataset")


# --- readers, counters and downloaders -------------------------------------------


def _read_fashion_mnist(folder: Path, split: str) -> RawSplit:
    return idx.load_idx_split(folder, split, FASHION_MNIST_CLASSES)


def _count_idx(folder: Path, split: str) -> int:
    return idx.read_idx_shape(idx.split_files(folder, split)[1])[0]


def _count_cifar(files: dict[str, tuple[str, ...]], label_key: str) -> Callable[[Path, str], int]:
    def count(folder: Path, split: str) -> int:
        return sum(cifar.read_batch(Path(folder) / f, label_key)[1].shape[0] for f in files[split])

    return count


def _count_tiny(folder: Path, split: str) -> int:
    return len(tiny_imagenet.split_files(folder, split)[0])


def _count_image_folder(folder: Path, split: str) -> int:
    return len(image_folder.list_files(folder, split)[0])


def _torchvision_download(class_name: str) -> Callable[[Path], None]:
    def download(dest: Path) -> None:
        # Imported lazily: torchvision is only needed when the user asks for a download.
        from torchvision import datasets

        getattr(datasets, class_name)(str(dest), train=True, download=True)
        getattr(datasets, class_name)(str(dest), train=False, download=True)

    return download


def _download_tiny_imagenet(dest: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, str(dest))


def _idx_required() -> tuple[str, ...]:
    bases = [b for split in SPLITS for b in idx.idx_file_names(split)]
    return tuple(f"{b}|{b}.gz" for b in bases)


# --- the datasets ------------------------------------------------------------------


def _cache(name: str) -> str:
    return f"~/.cache/pdd_ray/{name}"


DATASETS.register("fashion_mnist")(
    DatasetSpec(
        name="fashion_mnist",
        channels=1,
        image_size=(28, 28),
        num_classes=10,
        mean=(0.2861,),
        std=(0.3530,),
        zca=False,
        default_roots=("/usr/share/datasets/fashion-mnist", _cache("fashion_mnist")),
        how_to_get="apt-get install -y dataset-fashion-mnist, or pass --data-root DIR holding the four IDX files",
        reader=_read_fashion_mnist,
        counter=_count_idx,
        required=_idx_required(),
        folder_names=("FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "raw"),
        train_count=60000,
        test_count=10000,
        download=_torchvision_download("FashionMNIST"),
    )
)

DATASETS.register("cifar10")(
    DatasetSpec(
        name="cifar10",
        channels=3,
        image_size=(32, 32),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        zca=True,
        default_roots=(_cache("cifar10"),),
        how_to_get="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it, "
        "then pass --data-root DIR (the cifar-10-batches-py folder or its parent), or set data.download=true to fetch it",
        reader=cifar.load_cifar10,
        counter=_count_cifar(cifar.CIFAR10_FILES, "labels"),
        required=(*cifar.CIFAR10_FILES["train"], *cifar.CIFAR10_FILES["test"], cifar.CIFAR10_META),
        folder_names=(cifar.CIFAR10_DIR,),
        train_count=50000,
        test_count=10000,
        download=_torchvision_download("CIFAR10"),
    )
)

DATASETS.register("cifar100")(
    DatasetSpec(
        name="cifar100",
        channels=3,
        image_size=(32, 32),
        num_classes=100,
        mean=(0.5071, 0.4866, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        zca=True,
        default_roots=(_cache("cifar100"),),
        how_to_get="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it, "
        "then pass --data-root DIR (the cifar-100-python folder or its parent), or set data.download=true to fetch it",
        reader=cifar.load_cifar100,
        counter=_count_cifar(cifar.CIFAR100_FILES, "fine_labels"),
        required=(*cifar.CIFAR100_FILES["train"], *cifar.CIFAR100_FILES["test"], cifar.CIFAR100_META),
        folder_names=(cifar.CIFAR100_DIR,),
        train_count=50000,
        test_count=10000,
        download=_torchvision_download("CIFAR100"),
    )
)

DATASETS.register("tiny_imagenet")(
    DatasetSpec(
        name="tiny_imagenet",
        channels=3,
        image_size=(64, 64),
        num_classes=200,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        zca=False,
        default_roots=(_cache("tiny_imagenet"),),
        how_to_get=f"download and unzip {TINY_IMAGENET_URL}, then pass --data-root DIR "
        "(the tiny-imagenet-200 folder or its parent), or set data.download=true to fetch it",
        reader=tiny_imagenet.load_tiny_imagenet,
        counter=_count_tiny,
        required=("wnids.txt", "train", "val/images", "val/val_annotations.txt"),
        folder_names=(tiny_imagenet.TINY_DIR,),
        train_count=100000,
        test_count=10000,
        download=_download_tiny_imagenet,
        source_dirs=("train", "val"),
    )
)

DATASETS.register("image_folder")(
    DatasetSpec(
        name="image_folder",
        channels=None,
        image_size=None,
        num_classes=None,
        mean=None,
        std=None,
        zca=False,
        default_roots=(_cache("image_folder"),),
        how_to_get="arrange images as DIR/train/<class>/*.png and DIR/test/<class>/*.png "
        "(also .jpg/.jpeg/.bmp), then pass --data-root DIR",
        reader=image_folder.load_image_folder,
        counter=_count_image_folder,
        required=("train",),
        options=("image_size", "grayscale"),
        source_dirs=("train", "test"),
    )
)


# --- lookup ------------------------------------------------------------------------


def get_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name`` (UserError listing the choices if unknown)."""
    return DATASETS.get(name)


def _present(folder: Path, entry: str) -> bool:
    return any((folder / alt).exists() for alt in entry.split("|"))


def _places(spec: DatasetSpec, candidate: Path) -> list[Path]:
    # The candidate itself first, so an exact --data-root always wins over a sub-folder.
    return [candidate] + [candidate / sub for sub in spec.folder_names]


def _locate(spec: DatasetSpec, candidate: Path) -> Path | None:
    # A folder with *any* required file counts, so a half-copied dataset is reported
    # as "missing X" by the reader/verify instead of as "not found".
    for place in _places(spec, candidate):
        if place.is_dir() and any(_present(place, entry) for entry in spec.required):
            return place
    return None


def _candidates(spec: DatasetSpec, root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    return [Path(p).expanduser() for p in spec.default_roots]


def find_root(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder holding ``name``'s files: ``root`` (or a known sub-folder of it), else the default places."""
    spec = get_spec(name)
    candidates = _candidates(spec, root)
    for candidate in candidates:
        found = _locate(spec, candidate)
        if found is not None:
            return found
    searched = [str(p) for c in candidates for p in _places(spec, c)]
    message = f"{name} data not found; looked in: {', '.join(searched)}. To get it: {spec.how_to_get}"
    if not download:
        raise UserError(message)
    if spec.download is None:
        raise UserError(f"{message} ({name} has no automatic download)")
    dest = candidates[0] if root is not None else Path(_cache(name)).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        spec.download(dest)
    except Exception as e:  # network, disk, checksum: all mean "do it by hand"
        raise UserError(f"{message}. Download into {dest} failed: {type(e).__name__}: {e}") from e
    found = _locate(spec, dest)
    if found is None:
        raise UserError(f"{message}. Download into {dest} finished but the files are not there")
    return found


# --- loading -----------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")


def _check_options(spec: DatasetSpec, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise UserError(f"dataset {spec.name} does not take option(s) {', '.join(unknown)} (allowed: {allowed})")


def _label_problem(raw: RawSplit) -> str | None:
    n = len(raw.class_names)
    if raw.labels.numel() and (int(raw.labels.min()) < 0 or int(raw.labels.max()) >= n):
        return f"labels span {int(raw.labels.min())}..{int(raw.labels.max())}, outside 0..{n - 1} ({n} classes)"
    return None


def load_raw(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    **options: Any,
) -> RawSplit:
    """Read one split of ``name`` from disk as uint8 [N, C, H, W] images and int64 labels.

    ``options`` go to the reader; only ``image_folder`` takes any
    (``image_size``: int or (H, W); ``grayscale``: bool).
    """
    spec = get_spec(name)
    _check_split(split)
    _check_options(spec, options)
    folder = find_root(name, root, download=download)
    raw = spec.reader(folder, split, **options)
    problem = _label_problem(raw)
    if problem:
        raise UserError(f"{name} {split} in {folder}: {problem}")
    return raw


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 [N, C, H, W] images, in [0, 1] units."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    # Chunked so a large set never needs a full float64 copy.
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def complete_spec(spec: DatasetSpec, train: RawSplit) -> DatasetSpec:
    """``spec`` with every data-dependent (``None``) field filled from the loaded train split."""
    filled: dict[str, Any] = {}
    if spec.channels is None:
        filled["channels"] = int(train.images.shape[1])
    if spec.image_size is None:
        filled["image_size"] = (int(train.images.shape[2]), int(train.images.shape[3]))
    if spec.num_classes is None:
        filled["num_classes"] = len(train.class_names)
    if spec.mean is None or spec.std is None:
        filled["mean"], filled["std"] = channel_stats(train.images)
    return dataclasses.replace(spec, **filled) if filled else spec


# --- inspection (for `pdd-ray data info|verify`) -------------------------------------


def _spec_fields(spec: DatasetSpec) -> dict[str, Any]:
    skip = {"reader", "counter", "download", "required", "folder_names", "source_dirs"}
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in skip}


def _dir_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return files, size


def file_listing(folder: Path) -> list[dict[str, Any]]:
    """Top-level entries of ``folder``: files with their size, folders with file count and total size."""
    entries = []
    for p in sorted(Path(folder).iterdir(), key=lambda p: p.name):
        if p.is_dir():
            files, size = _dir_size(p)
            entries.append({"path": p.name + "/", "bytes": size, "files": files})
        else:
            entries.append({"path": p.name, "bytes": p.stat().st_size})
    return entries


def dataset_info(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Spec fields, resolved root, files with sizes and per-split counts (or the error that prevented them)."""
    spec = get_spec(name)
    info: dict[str, Any] = _spec_fields(spec)
    info.update(root=None, files=[], counts={}, errors=[])
    try:
        folder = find_root(name, root)
    except UserError as e:
        info["errors"].append(str(e))
        return info
    info["root"] = str(folder)
    info["files"] = file_listing(folder)
    for split in SPLITS:
        try:
            info["counts"][split] = spec.counter(folder, split)
        except UserError as e:
            info["counts"][split] = None
            info["errors"].append(f"{split}: {e}")
    return info


def _split_problems(spec: DatasetSpec, split: str, raw: RawSplit) -> list[str]:
    problems = []
    n = raw.images.shape[0]
    expected = spec.train_count if split == "train" else spec.test_count
    if expected is not None and n != expected:
        problems.append(f"{split}: {n} examples, expected {expected}")
    if spec.num_classes is not None and len(raw.class_names) != spec.num_classes:
        problems.append(f"{split}: {len(raw.class_names)} class names, expected {spec.num_classes}")
    label_problem = _label_problem(raw)
    if label_problem:
        problems.append(f"{split}: {label_problem}")
    else:
        counts = np.bincount(raw.labels.numpy(), minlength=len(raw.class_names))
        empty = [raw.class_names[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            problems.append(f"{split}: {len(empty)} classes have no examples: {', '.join(empty[:5])}")
    if spec.channels is not None and spec.image_size is not None:
        want = (spec.channels, *spec.image_size)
        if tuple(raw.images.shape[1:]) != want:
            problems.append(f"{split}: image shape {tuple(raw.images.shape[1:])}, expected {want} (C, H, W)")
    return problems


def verify(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Problems found in ``name``'s files (missing files, wrong counts, label range, shape); [] means OK."""
    spec = get_spec(name)
    try:
        folder = find_root(name, root)
    except UserError as e:
        return [str(e)]
    missing = [entry.replace("|", " or ") for entry in spec.required if not _present(folder, entry)]
    if missing:
        return [f"missing in {folder}: {m}" for m in missing]
    problems: list[str] = []
    loaded: dict[str, RawSplit] = {}
    for split in SPLITS:
        try:
            loaded[split] = spec.reader(folder, split)
        except UserError as e:
            problems.append(f"{split}: {e}")
            continue
        problems += _split_problems(spec, split, loaded[split])
    if len(loaded) == 2:
        train, test = loaded["train"], loaded["test"]
        if train.class_names != test.class_names:
            problems.append("train and test have different class names")
        if train.images.shape[1:] != test.images.shape[1:]:
            problems.append(f"train images are {tuple(train.images.shape[1:])} but test images are {tuple(test.images.shape[1:])}")
    return problems
