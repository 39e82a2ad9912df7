"""Expert-trajectory store: one Arrow IPC file per expert, one record batch per epoch snapshot.

Layout of a store directory::

    manifest.json          what the experts are (dataset, model, layout, recipe, dtype) and which are complete
    expert_00000.arrow     Arrow IPC *file*: batch k = snapshot after epoch k (row 0 = init)

Matching reads random (expert, epoch) snapshots all the time. The IPC file
footer indexes every batch, so reading snapshot k from a memory-mapped file
touches only that batch's bytes; each row carries a crc32 checked on every
read. The whole-file sha256 in the manifest is for ``verify()``. No pickle.

Crash safety: an expert file is written under a temp name, fsynced and
renamed; only then does the manifest (also written atomically) call it
complete. A file the manifest does not list is ignored.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pdd_ray.errors import UserError
from pdd_ray.models.functional import ParamLayout
from pdd_ray.provenance import atomic_write, now, read_manifest_file, versions, write_json
from pdd_ray.untrusted import member_file

FORMAT = "pdd-ray/trajectory-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# store dtype -> (torch dtype snapshots are cast to, Arrow value type, numpy dtype of the stored bits)
# bfloat16 has no Arrow type: its raw bits go in as uint16 and are reinterpreted on read.
DTYPES = {
    "float32": (torch.float32, pa.float32(), np.float32),
    "float16": (torch.float16, pa.float16(), np.float16),
    "bfloat16": (torch.bfloat16, pa.uint16(), np.uint16),
}
# Manifest fields resume compares, in the order differences are reported.
IDENTITY_FIELDS = ("dataset", "model", "layout", "recipe", "dtype", "num_snapshots")
# Keys write_expert sets itself; the caller's info may not shadow them.
RESERVED_INFO = ("file", "snapshots", "sha256", "bytes", "status", "written")


class TrajectoryStore:
    """A directory of expert trajectories with random access to any (expert, epoch) snapshot."""

    def __init__(self, directory: str | Path, manifest: dict):
        self._directory = Path(directory)
        self._manifest = manifest
        self._layout = ParamLayout.from_dict(manifest["layout"])
        self._readers: dict[int, tuple[pa.MemoryMappedFile, pa.ipc.RecordBatchFileReader]] = {}

    # ---- creating and opening -------------------------------------------------------------

    @classmethod
    def create(cls, directory, *, dataset: str, preprocessing: dict, model: dict, layout: ParamLayout,
               recipe: dict, num_snapshots: int, dtype: str = "float32") -> "TrajectoryStore":
        """Start a new store, or reopen an existing one whose configuration is identical (resume)."""
        if dtype not in DTYPES:
            raise UserError(f"trajectory dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if num_snapshots < 1:
            raise UserError(f"num_snapshots must be >= 1, got {num_snapshots}")
        directory = Path(directory)
        wanted = _jsonable({"dataset": dataset, "model": model, "layout": layout.to_dict(), "recipe": recipe,
                            "dtype": dtype, "num_snapshots": num_snapshots})
        if (directory / MANIFEST).is_file():
            store = cls.open(directory)
            store._check_identity(wanted)
        else:
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **wanted,
                        "preprocessing": _jsonable(preprocessing), "created": now(), "versions": versions(),
                        "experts": {}}
            write_json(directory / MANIFEST, manifest)
            store = cls(directory, manifest)
        # Only the writer removes crash leftovers: a reader doing it could delete a file being written.
        store._remove_temp_files()
        return store

    @classmethod
    def open(cls, directory, layout: ParamLayout | None = None) -> "TrajectoryStore":
        """Open an existing store; with ``layout``, refuse one whose parameter layout differs."""
        path = Path(directory) / MANIFEST
        manifest = read_manifest_file(directory, FORMAT, "expert-trajectory store", MANIFEST)
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{path} has format_version {manifest['format_version']}; "
                            f"this pdd-ray reads up to {FORMAT_VERSION}")
        _check_manifest(manifest, path)
        store = cls(directory, manifest)
        if layout is not None and layout != store.layout:
            raise UserError(f"{directory}: {layout_difference(store.layout, layout)}")
        return store

    def _check_identity(self, wanted: dict) -> None:
        for key in IDENTITY_FIELDS:
            if self._manifest.get(key) != wanted[key]:
                if key == "layout":
                    detail = layout_difference(self.layout, ParamLayout.from_dict(wanted["layout"]))
                else:
                    detail = _first_difference(key, self._manifest.get(key), wanted[key])
                raise UserError(f"{self._directory} was built with a different {key} ({detail}); "
                                f"use a new output directory")

    def _remove_temp_files(self) -> None:
        for pattern in (".expert_*.arrow.*.tmp", f".{MANIFEST}.*.tmp"):
            for tmp in self._directory.glob(pattern):
                tmp.unlink(missing_ok=True)

    # ---- properties ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The store's directory."""
        return self._directory

    @property
    def manifest(self) -> dict:
        """The manifest as last written (do not mutate)."""
        return self._manifest

    @property
    def layout(self) -> ParamLayout:
        """Names and shapes of the flattened parameters."""
        return self._layout

    @property
    def num_snapshots(self) -> int:
        """Snapshots per expert: the init plus one per stored epoch."""
        return int(self._manifest["num_snapshots"])

    @property
    def dtype(self) -> str:
        """On-disk dtype: float32, float16 or bfloat16 (reads always return float32)."""
        return self._manifest["dtype"]

    # ---- writing ---------------------------------------------------------------------------

    def write_expert(self, expert_id: int, snapshots: torch.Tensor, info: dict) -> None:
        """Atomically store one expert's trajectory ``[num_snapshots, numel]``; re-writing an id replaces it."""
        rows = self._cast(snapshots)
        clash = sorted(set(info) & set(RESERVED_INFO))
        if clash:
            raise ValueError(f"info keys {clash} are reserved by the trajectory store")
        key, name = str(int(expert_id)), _file_name(expert_id)
        if key in self._manifest["experts"]:
            # Un-list it first, so a crash between the file rename and the manifest update
            # cannot leave the old entry (old checksum) vouching for a new file.
            self._commit_manifest({k: v for k, v in self._manifest["experts"].items() if k != key})
        self._close_reader(int(expert_id))
        # atomic_write fsyncs the file and the directory: the rename is durable before the manifest vouches for it
        path = atomic_write(self._directory / name, lambda tmp: self._write_arrow(tmp, rows))
        entry = {**_jsonable(info), "file": name, "snapshots": len(rows), "sha256": _sha256(path),
                 "bytes": path.stat().st_size, "status": "complete", "written": now()}
        self._commit_manifest({**self._manifest["experts"], key: entry})

    def _cast(self, snapshots: torch.Tensor) -> np.ndarray:
        """Snapshots as a numpy array of the stored bits, after checking their shape."""
        expected = (self.num_snapshots, self.layout.numel)
        if tuple(snapshots.shape) != expected or not snapshots.is_floating_point():
            raise ValueError(f"snapshots must be a float tensor of shape {list(expected)}, "
                             f"got {snapshots.dtype} {list(snapshots.shape)}")
        torch_dtype, _, np_dtype = DTYPES[self.dtype]
        cast = snapshots.detach().to("cpu", torch.float32).to(torch_dtype).contiguous()
        if self.dtype == "bfloat16":
            cast = cast.view(torch.int16)  # numpy has no bfloat16; keep the bits
        return cast.numpy().view(np_dtype)

    def _write_arrow(self, path: Path, rows: np.ndarray) -> None:
        schema = _schema(self.dtype, self.layout.numel)
        with open(path, "wb") as f:
            with pa.ipc.new_file(f, schema) as writer:
                for epoch, row in enumerate(rows):
                    writer.write_batch(_row_batch(schema, epoch, row))

    def _commit_manifest(self, experts: dict) -> None:
        # The in-memory manifest changes only once the file on disk has.
        manifest = {**self._manifest, "experts": experts}
        write_json(self._directory / MANIFEST, manifest)
        self._manifest = manifest

    # ---- reading ---------------------------------------------------------------------------

    def completed(self) -> list[int]:
        """Ids the manifest marks complete and whose file is present with the recorded size."""
        return sorted(int(key) for key, entry in self._manifest["experts"].items()
                      if entry.get("status") == "complete" and self._intact(entry))

    def damaged(self) -> list[int]:
        """Ids the manifest marks complete whose file is missing or has another size (truncated, say)."""
        return sorted(int(key) for key, entry in self._manifest["experts"].items()
                      if entry.get("status") == "complete" and not self._intact(entry))

    def _intact(self, entry: dict) -> bool:
        path = self._path(entry)
        return path.is_file() and path.stat().st_size == entry.get("bytes")

    def _path(self, entry: dict) -> Path:
        """The file of a manifest entry: a plain name inside the store (the manifest may not be ours)."""
        return member_file(self._directory, entry.get("file"), "an expert file")

    def missing(self, num_experts: int) -> list[int]:
        """Ids in ``range(num_experts)`` that are not complete yet."""
        done = set(self.completed())
        return [i for i in range(num_experts) if i not in done]

    def info(self, expert_id: int) -> dict:
        """The manifest entry of one expert (caller's info plus file, sha256, bytes, ...)."""
        return dict(self._entry(expert_id))

    def snapshot(self, expert_id: int, epoch: int) -> torch.Tensor:
        """Parameters after ``epoch`` (0 = init) as float32 ``[numel]``; reads only that batch."""
        self._check_epoch(expert_id, epoch)
        bits = self._row_bits(expert_id, epoch)
        return _to_float32(bits, self.dtype)

    def trajectory(self, expert_id: int, epochs: list[int] | None = None) -> torch.Tensor:
        """Several snapshots of one expert stacked as float32 ``[len(epochs), numel]`` (all by default)."""
        epochs = range(self._entry(expert_id)["snapshots"]) if epochs is None else epochs
        return torch.stack([self.snapshot(expert_id, k) for k in epochs])

    def _entry(self, expert_id: int) -> dict:
        entry = self._manifest["experts"].get(str(int(expert_id)))
        if entry is None or entry.get("status") != "complete":
            raise UserError(f"expert {expert_id} is not in {self._directory} "
                            f"(complete: {_ranges(self.completed())})")
        return entry

    def _check_epoch(self, expert_id: int, epoch: int) -> None:
        count = self._entry(expert_id)["snapshots"]
        if not 0 <= epoch < count:
            raise UserError(f"epoch {epoch} out of range for expert {expert_id}: "
                            f"it has snapshots 0..{count - 1}")

    def _row_bits(self, expert_id: int, epoch: int) -> np.ndarray:
        """The stored bits of one row (a read-only view into the memory map), crc-checked."""
        where = f"expert {expert_id} epoch {epoch} ({self._directory / _file_name(expert_id)})"
        try:
            batch = self._reader(expert_id).get_batch(epoch)
            bits = _params_view(batch, self.dtype, self.layout.numel)
            stored_epoch, stored_crc = batch.column(0)[0].as_py(), batch.column(2)[0].as_py()
        except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
            raise UserError(f"{where} is corrupted or unreadable: {exc}") from None
        if stored_epoch != epoch or zlib.crc32(bits) != stored_crc:
            raise UserError(f"{where} is corrupted (crc32 or epoch mismatch); rebuild this expert")
        return bits

    def _reader(self, expert_id: int) -> pa.ipc.RecordBatchFileReader:
        """The cached reader of one expert's memory-mapped file, opened on first use."""
        if expert_id not in self._readers:
            path = self._path(self._entry(expert_id))
            if not path.is_file():
                raise UserError(f"expert {expert_id}: file {path} is missing")
            source = pa.memory_map(str(path), "r")
            try:
                reader = pa.ipc.open_file(source)
                self._check_schema(expert_id, reader)
            except BaseException:
                source.close()
                raise
            self._readers[expert_id] = (source, reader)
        return self._readers[expert_id][1]

    def _check_schema(self, expert_id: int, reader: pa.ipc.RecordBatchFileReader) -> None:
        meta = reader.schema.metadata or {}
        found = (meta.get(b"dtype", b"").decode(), meta.get(b"numel", b"").decode(), reader.num_record_batches)
        wanted = (self.dtype, str(self.layout.numel), self._entry(expert_id)["snapshots"])
        if found != wanted:
            raise UserError(f"expert {expert_id}: file has (dtype, numel, snapshots) {found}, "
                            f"manifest says {wanted}")

    # ---- checking and summarising ------------------------------------------------------------

    def verify(self, expert_id: int | None = None) -> list[str]:
        """Full sha256 check of one expert (or all complete ones); returns the problems found."""
        ids = self.completed() if expert_id is None else [expert_id]
        problems = []
        for i in ids:
            problems += self._verify_one(i)
        if expert_id is None:
            broken = sorted(set(int(k) for k in self._manifest["experts"]) - set(ids))
            problems += [f"expert {i}: file missing or truncated" for i in broken]
        return problems

    def _verify_one(self, expert_id: int) -> list[str]:
        entry = self._entry(expert_id)
        path = self._path(entry)
        if not path.is_file():
            return [f"expert {expert_id}: file {path.name} is missing"]
        layout = self._layout_problem(expert_id)
        if layout:
            return [layout]
        if _sha256(path) == entry["sha256"]:
            return []
        bad = self._bad_epochs(expert_id)
        where = f"epochs {_ranges(bad)}" if bad else "file structure"
        return [f"expert {expert_id}: {path.name} sha256 mismatch (corrupted {where})"]

    def _layout_problem(self, expert_id: int) -> str | None:
        """How the file's stored rows disagree with the manifest's layout and dtype (None if they agree)."""
        self._close_reader(expert_id)
        try:
            self._reader(expert_id)
        except UserError as exc:
            return f"{exc} (layout {describe_layout(self.layout)})"
        except (pa.ArrowException, OSError):
            return None  # unreadable: the sha256 check says so
        return None

    def _bad_epochs(self, expert_id: int) -> list[int]:
        """Which snapshots fail their crc, to say where a file is damaged (none if the file won't open)."""
        self._close_reader(expert_id)
        try:
            self._reader(expert_id)
        except (UserError, pa.ArrowException, OSError):
            return []
        bad = []
        for k in range(self._entry(expert_id)["snapshots"]):
            try:
                self._row_bits(expert_id, k)
            except UserError:
                bad.append(k)
        return bad

    def summary_rows(self) -> list[dict]:
        """One row per complete expert for ``pdd-ray experts inspect``."""
        rows = []
        for i in self.completed():
            entry = self._entry(i)
            acc = entry.get("test_accuracy")
            rows.append({"id": i, "snapshots": entry["snapshots"], "init": entry.get("init"),
                         "test_acc": acc, "test_accuracy": acc, "bytes": entry["bytes"]})
        return rows

    # ---- closing -----------------------------------------------------------------------------

    def _close_reader(self, expert_id: int) -> None:
        source, _ = self._readers.pop(expert_id, (None, None))
        if source is not None:
            source.close()

    def close(self) -> None:
        """Close every memory-mapped file this store opened."""
        for expert_id in list(self._readers):
            self._close_reader(expert_id)

    def __enter__(self) -> "TrajectoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TrajectoryStore({str(self._directory)!r}, experts={len(self.completed())}, "
                f"snapshots={self.num_snapshots}, numel={self.layout.numel}, dtype={self.dtype})")


# ---- helpers -----------------------------------------------------------------------------------

def _check_manifest(manifest: dict, path: Path) -> None:
    """The fields every read relies on, in the shape they must have (the manifest may come from elsewhere)."""
    layout = manifest.get("layout")
    ok = (isinstance(layout, dict) and isinstance(layout.get("names"), list) and isinstance(layout.get("shapes"), list)
          and len(layout["names"]) == len(layout["shapes"]) and all(isinstance(n, str) for n in layout["names"])
          and all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in layout["shapes"]))
    ok = ok and manifest.get("dtype") in DTYPES and isinstance(manifest.get("experts"), dict)
    snapshots = manifest.get("num_snapshots")
    if not (ok and isinstance(snapshots, int) and snapshots >= 1):
        raise UserError(f"{path} is malformed: layout (names and shapes), dtype, num_snapshots or experts "
                        "missing or of the wrong type")


def _file_name(expert_id: int) -> str:
    return f"expert_{int(expert_id):05d}.arrow"


def _schema(dtype: str, numel: int) -> pa.Schema:
    value_type = DTYPES[dtype][1]
    return pa.schema([("epoch", pa.int32()), ("params", pa.list_(value_type, numel)), ("crc32", pa.uint32())],
                     metadata={"dtype": dtype, "numel": str(numel), "format": FORMAT})


def _row_batch(schema: pa.Schema, epoch: int, row: np.ndarray) -> pa.RecordBatch:
    params = pa.FixedSizeListArray.from_arrays(pa.array(row, type=schema.field("params").type.value_type), len(row))
    return pa.record_batch([pa.array([epoch], pa.int32()), params, pa.array([zlib.crc32(row)], pa.uint32())],
                           schema=schema)


def _params_view(batch: pa.RecordBatch, dtype: str, numel: int) -> np.ndarray:
    """The row's value buffer as numpy, without copying out of the memory map."""
    values = batch.column(1).values
    np_dtype = np.dtype(DTYPES[dtype][2])
    return np.frombuffer(values.buffers()[1], dtype=np_dtype, count=numel, offset=values.offset * np_dtype.itemsize)


def _to_float32(bits: np.ndarray, dtype: str) -> torch.Tensor:
    # Copy out of the read-only memory map; torch tensors must own writable memory.
    if dtype == "bfloat16":
        # bfloat16 is the top half of a float32, so widening is a shift: exact, and much faster
        # on CPU than torch's bfloat16 -> float32 conversion of a freshly viewed tensor.
        return torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32))
    return torch.from_numpy(bits.astype(np.float32, copy=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonable(value):
    """``value`` as it will read back from JSON (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(value, default=str))


def _first_difference(path: str, old, new) -> str:
    """Where two JSON values first differ, as 'path: store has X, now Y'."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key, _ABSENT) != new.get(key, _ABSENT):
                return _first_difference(f"{path}.{key}", old.get(key, _ABSENT), new.get(key, _ABSENT))
    return f"{path}: store has {old!r}, now {new!r}"


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def describe_layout(layout: ParamLayout, limit: int = 4) -> str:
    """'conv.weight [8, 1, 3, 3], conv.bias [8], ... (10 tensors, 1234 parameters)'."""
    shown = ", ".join(f"{n} {list(s)}" for n, s in list(zip(layout.names, layout.shapes))[:limit])
    more = ", ..." if len(layout.names) > limit else ""
    return f"{shown}{more} ({len(layout.names)} tensors, {layout.numel} parameters)"


def layout_difference(stored: ParamLayout, given: ParamLayout) -> str:
    """The first parameter whose name or shape differs between two layouts."""
    for i, (a, b) in enumerate(zip(zip(stored.names, stored.shapes), zip(given.names, given.shapes))):
        if a != b:
            return (f"parameter {i} is '{a[0]}' {list(a[1])} in the store but '{b[0]}' {list(b[1])} "
                    f"in the model")
    if len(stored.names) > len(given.names):
        return f"the store has extra parameter '{stored.names[len(given.names)]}' the model lacks"
    if len(given.names) > len(stored.names):
        return f"the model has extra parameter '{given.names[len(stored.names)]}' the store lacks"
    return "layouts are identical"


def _ranges(ids: list[int]) -> str:
    """Compact '0-3,7' form of a sorted id list."""
    if not ids:
        return "none"
    runs = [[ids[0], ids[0]]]
    for i in ids[1:]:
        if i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
