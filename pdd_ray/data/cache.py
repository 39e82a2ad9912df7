"""Decode a dataset once per machine: a memory-mapped file cache of the raw splits, and a decode counter.

    $PDD_RAY_CACHE/datasets/<dataset>-<split>-<digest>/     (default ~/.cache/pdd-ray/datasets)
        images.npy    uint8 [N, C, H, W], exactly as the reader decoded it
        labels.npy    int64 [N]
        meta.json     format, class names, each array's shape, dtype and crc32 (the entry is valid once this exists)

Decoding is the slow part of loading (Tiny-ImageNet: 110k JPEGs), and every
expert build, Ray Train worker, sweep trial and job on a machine needs the same
splits. The digest covers the dataset, the split, the reader options and the
name, size and mtime of every file the reader reads, so changed data is a new
entry, whatever folder it is mounted at. An entry is built in a temporary
folder and renamed into place whole (two processes racing both succeed; one
copy wins). On read the arrays are memory-mapped (copy-on-write, so processes
share the pages) and checked against the metadata: shape, dtype, crc32. The
files are treated as untrusted: plain ``.npy`` arrays loaded without pickle,
JSON metadata; an entry that fails a check is decoded again and replaced.

``PDD_RAY_DATA_CACHE=0`` (or ``off`` / ``false`` / ``no``) turns the file cache off:
every load decodes the files again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdd_ray.data.registry import find_root, get_spec, load_raw
from pdd_ray.data.splits import RawSplit
from pdd_ray.storage import default_cache_root

log = logging.getLogger(__name__)

FORMAT = "pdd-ray/decoded-split"
FORMAT_VERSION = 1  # bump when a reader's output changes: old entries are then never matched
DISABLE_ENV = "PDD_RAY_DATA_CACHE"
META = "meta.json"
ARRAYS = {"images": np.uint8, "labels": np.int64}

_decodes = 0
_digests: dict[tuple, str] = {}  # source_digest's memo


def decode_count() -> int:
    """How many splits this process has decoded from the dataset's own files (cache hits do not count)."""
    return _decodes


def enabled() -> bool:
    """Whether the file cache is on (``PDD_RAY_DATA_CACHE`` not set to 0 / off / false / no)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def cache_dir() -> Path:
    """Where decoded splits live: ``$PDD_RAY_CACHE/datasets`` (default ``~/.cache/pdd-ray/datasets``)."""
    return default_cache_root() / "datasets"


def source_digest(name: str, folder: Path, split: str, options: dict[str, Any]) -> str:
    """sha256 of what a decoded split depends on: dataset, split, reader options, the reader's files.

    Walking a tree of image files costs a stat per file, so the result is remembered in this process
    while the folder's own files and the trees' folders are unchanged (a file replaced in place
    inside a tree is seen by the next process).
    """
    spec = get_spec(name)
    top = _listing(Path(folder))
    trees = [Path(folder) / sub for sub in spec.source_dirs]
    key = (name, str(folder), split, tuple(sorted(options.items())), tuple(top),
           tuple(_dir_mtimes(tree) for tree in trees))
    if key not in _digests:
        files = list(top)
        for tree in trees:
            files += [(f"{tree.name}/{rel}", size, mtime) for rel, size, mtime in _tree(tree)]
        record = {"format": FORMAT, "version": FORMAT_VERSION, "dataset": name, "split": split,
                  "options": {k: options[k] for k in sorted(options)}, "files": files}
        _digests[key] = hashlib.sha256(json.dumps(record, default=str).encode()).hexdigest()
    return _digests[key]


def _listing(directory: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the visible files directly in ``directory``, by name."""
    out = []
    with os.scandir(directory) as entries:
        for e in entries:
            if not e.name.startswith(".") and e.is_file():
                st = e.stat()
                out.append((e.name, st.st_size, st.st_mtime_ns))
    return sorted(out)


def _tree(directory: Path, prefix: str = "") -> list[tuple[str, int, int]]:
    """``_listing`` of every folder under ``directory``, names relative to it (hidden entries skipped)."""
    if not directory.is_dir():
        return []
    out = [(prefix + n, size, mtime) for n, size, mtime in _listing(directory)]
    subs = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    for sub in subs:
        out += _tree(directory / sub, f"{prefix}{sub}/")
    return out


def _dir_mtimes(directory: Path) -> tuple:
    """mtime of every folder under ``directory``: files added, removed or renamed anywhere in it change one."""
    if not directory.is_dir():
        return ()
    return tuple((d, os.stat(d).st_mtime_ns) for d, _, _ in sorted(os.walk(directory)))


@dataclass(frozen=True)
class SplitSource:
    """One split's files, located, and the digest of what its decoded form depends on."""

    dataset: str
    folder: Path
    split: str
    options: tuple[tuple[str, Any], ...]
    digest: str

    @property
    def entry(self) -> Path:
        """This split's folder in the file cache."""
        return cache_dir() / f"{self.dataset}-{self.split}-{self.digest[:32]}"


def split_source(name: str, root, split: str, download: bool = False, **options: Any) -> SplitSource:
    """Locate ``split`` of ``name`` (downloading it if asked and absent) and digest its files; decodes nothing."""
    folder = find_root(name, root, download=download)
    return SplitSource(name, folder, split, tuple(sorted(options.items())),
                       source_digest(name, folder, split, options))


def read_split(source: SplitSource) -> RawSplit:
    """The split as ``load_raw`` decodes it: from the file cache when it holds it, else decoded (and cached)."""
    global _decodes
    if enabled():
        cached = read_entry(source.entry)
        if cached is not None:
            return cached
    raw = load_raw(source.dataset, source.folder, source.split, **dict(source.options))
    _decodes += 1
    if enabled():
        write_entry(source.entry, raw)
    return raw


def raw_split(name: str, root, split: str, download: bool = False, **options: Any) -> RawSplit:
    """``load_raw`` through the file cache: one split, decoded only when this machine has not yet."""
    return read_split(split_source(name, root, split, download, **options))


def read_entry(entry: Path) -> RawSplit | None:
    """The split stored in ``entry``, memory-mapped; None when absent or failing a check (then it is rebuilt)."""
    if not (entry / META).is_file():
        return None
    try:
        meta = json.loads((entry / META).read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')} version {meta.get('version')}")
        arrays = {key: _checked_array(entry, key, dtype, meta["arrays"][key]) for key, dtype in ARRAYS.items()}
        names = meta["class_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("class names are not a list of strings")
        return RawSplit(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), tuple(names))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the decoded-data cache entry %s (%s); decoding the dataset again", entry, exc)
        return None


def _checked_array(entry: Path, key: str, dtype, expected: dict) -> np.ndarray:
    # mmap_mode="c": copy-on-write pages shared by every process reading the entry; never pickle.
    array = np.load(entry / f"{key}.npy", mmap_mode="c", allow_pickle=False)
    if array.dtype != np.dtype(dtype) or list(array.shape) != expected["shape"]:
        raise ValueError(f"{key}.npy is {array.dtype} {list(array.shape)}, metadata says {expected}")
    if zlib.crc32(array) != expected["crc32"]:
        raise ValueError(f"{key}.npy fails its crc32")
    return array


def write_entry(entry: Path, raw: RawSplit) -> None:
    """Store ``raw`` as ``entry``, whole or not at all; a failure (full disk, read-only cache) only logs."""
    arrays = {"images": raw.images.numpy(), "labels": raw.labels.numpy()}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "class_names": list(raw.class_names),
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": zlib.crc32(np.ascontiguousarray(a))}
                       for k, a in arrays.items()}}
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
        for key, array in arrays.items():
            _write_synced(tmp / f"{key}.npy", lambda f, a=array: np.save(f, np.ascontiguousarray(a), allow_pickle=False))
        _write_synced(tmp / META, lambda f: f.write(json.dumps(meta).encode()))
        if entry.exists():  # a failed check left a bad entry: replace it
            shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)
        tmp = None
    except OSError as exc:
        # Another process renamed its copy first (the same bytes), or the cache is not writable.
        if not (entry / META).is_file():
            log.warning("could not cache the decoded split in %s: %s", entry, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
