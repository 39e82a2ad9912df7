"""Storage locations: local or shared-filesystem paths, or URIs that pyarrow.fs understands.

URIs (``s3://bucket/key``, ``gs://``, ``hdfs://``, ``file://``) let workers on
other nodes reach expert buffers and synthetic sets without a shared
filesystem. Readers memory-map local files, so a URI input is mirrored into a
local cache directory first (``PDD_RAY_CACHE``, default ``~/.cache/pdd-ray``);
a URI output is built in that cache and uploaded.

Copies are incremental: a file whose copy has the same size and is at least
as new is skipped, and after a copy both sides share one modification time
when either is local, so syncing back and forth copies nothing. They are
atomic per file where the filesystem can rename (local, HDFS: written under a
hidden temp name, then renamed; object stores publish an object only once its
upload completes), and ``manifest.json`` goes last, so a copied manifest
never vouches for files that are not there yet. Nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import uuid
from pathlib import Path

from pdd_ray.errors import UserError
from pdd_ray.locking import LOCK_NAME

CACHE_ENV = "PDD_RAY_CACHE"
MANIFEST = "manifest.json"
CHUNK_BYTES = 8 << 20
OBJECT_STORES = ("s3", "gcs", "abfs")  # pyarrow type_name of filesystems without an atomic rename
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path) -> bool:
    """True for ``scheme://...`` strings; plain paths (str or Path) are not URIs."""
    return isinstance(path, str) and bool(_URI.match(path))


def open_filesystem(path_or_uri):
    """``(pyarrow FileSystem, path inside it)`` for a URI or a local path."""
    from pyarrow import fs as pafs

    if not is_uri(path_or_uri):
        return pafs.LocalFileSystem(), str(Path(path_or_uri).expanduser().absolute())
    return _from_uri(path_or_uri.rstrip("/"))


def _from_uri(uri: str):
    from pyarrow import ArrowException
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (ArrowException, OSError) as exc:
        raise UserError(f"cannot open {uri}: {_first_line(exc)}") from None
    return filesystem, path.rstrip("/")


def default_cache_root() -> Path:
    """Where mirrors live: ``$PDD_RAY_CACHE``, else ``~/.cache/pdd-ray``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pdd-ray").expanduser()


def mirror_path(uri: str, root: str | Path | None = None) -> Path:
    """The local directory that mirrors ``uri``: readable name plus a hash of the whole URI."""
    uri = uri.rstrip("/")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(uri)) or "root"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return Path(root or default_cache_root()) / "mirror" / f"{name}-{digest}"


def local_mirror(uri: str, cache_root: str | Path | None = None) -> Path:
    """Copy the directory at ``uri`` into its local mirror (only what changed) and return the mirror."""
    target = mirror_path(uri, cache_root)
    sync_directory(uri, target)
    return target


def upload_directory(local: str | Path, uri: str) -> list[str]:
    """Copy a local directory to ``uri`` (only what changed); returns the relative paths copied."""
    return sync_directory(Path(local), uri)


def resolve_input_dir(path_or_uri: str | Path) -> Path:
    """A local directory to read: a path as is, ``file://`` as its path, any other URI mirrored."""
    if not is_uri(path_or_uri):
        return Path(path_or_uri)
    filesystem, path = open_filesystem(path_or_uri)
    if filesystem.type_name == "local":  # file:// is already local: reading it in place beats a copy
        return Path(path)
    return local_mirror(path_or_uri)


def prepare_output_dir(uri: str, cache_root: str | Path | None = None) -> Path:
    """The local directory to build an output for ``uri`` in, holding what ``uri`` already has (resume)."""
    target = mirror_path(uri, cache_root)
    sync_directory(uri, target, missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    return target


def sync_directory(source, destination, missing_ok: bool = False) -> list[str]:
    """Copy files under ``source`` that ``destination`` lacks or has stale; returns their relative paths.

    Both sides are local paths or URIs. Files are never deleted from the
    destination. A missing source is a UserError unless ``missing_ok``.
    """
    src_fs, src_root = open_filesystem(source)
    dst_fs, dst_root = open_filesystem(destination)
    wanted = _list_files(src_fs, src_root, source, missing_ok)
    present = _list_files(dst_fs, dst_root, destination, missing_ok=True)
    copied = []
    for rel in sorted(wanted, key=lambda r: (posixpath.basename(r) == MANIFEST, r)):
        if not _up_to_date(wanted[rel], present.get(rel)):
            _copy_file(src_fs, f"{src_root}/{rel}", dst_fs, f"{dst_root}/{rel}", wanted[rel].mtime_ns)
            copied.append(rel)
    return copied


def _list_files(filesystem, root: str, label, missing_ok: bool) -> dict:
    """Relative path -> FileInfo of the files under ``root``, leaving out in-progress temp files."""
    from pyarrow import fs as pafs

    try:
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            if missing_ok:
                return {}
            raise UserError(f"{label}: no such directory")
        if info.type != pafs.FileType.Directory:
            raise UserError(f"{label}: not a directory")
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as exc:  # credentials, missing bucket, network: the first touch is where they surface
        raise UserError(f"{label}: {_first_line(exc)}") from None
    files = {}
    for item in infos:
        rel = item.path[len(root):].lstrip("/")
        if item.type == pafs.FileType.File and not _is_temp(posixpath.basename(rel)):
            files[rel] = item
    return files


def _is_temp(name: str) -> bool:
    # The store's atomic writes (".expert_00001.arrow.x.tmp") and this module's (".name.x.partial"), and the
    # lock of the local copy: it belongs to this machine's process, so a mirror elsewhere must never inherit it.
    return (name.startswith(".") and name.endswith((".tmp", ".partial"))) or name == LOCK_NAME


def _up_to_date(source, copy) -> bool:
    """Same size, and not older than the source when both report a modification time."""
    if copy is None or copy.size != source.size:
        return False
    return source.mtime_ns is None or copy.mtime_ns is None or copy.mtime_ns >= source.mtime_ns


def _copy_file(src_fs, src_path: str, dst_fs, dst_path: str, mtime_ns: int | None = None) -> None:
    """Stream one file across filesystems; where renames are atomic, via a hidden temp file.

    Afterwards both sides carry the same modification time where one side is
    local (the copy gets ``mtime_ns``, the source's; or a local source gets the
    upload's), so the next sync in either direction sees them as up to date.
    """
    parent, name = posixpath.split(dst_path)
    dst_fs.create_dir(parent, recursive=True)
    atomic = dst_fs.type_name not in OBJECT_STORES
    target = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.partial" if atomic else dst_path
    try:
        # compression=None: the default 'detect' would (de)compress files named *.gz on the fly
        with src_fs.open_input_stream(src_path, compression=None) as reader, \
                dst_fs.open_output_stream(target, compression=None) as writer:
            while chunk := reader.read(CHUNK_BYTES):
                writer.write(chunk)
        if dst_fs.type_name == "local" and mtime_ns is not None:
            os.utime(target, ns=(mtime_ns, mtime_ns))
        if atomic:
            _replace(dst_fs, target, dst_path)
    except BaseException:
        if atomic:
            _delete_quietly(dst_fs, target)
        raise
    if dst_fs.type_name != "local" and src_fs.type_name == "local":
        uploaded = dst_fs.get_file_info(dst_path).mtime_ns
        if uploaded is not None:
            os.utime(src_path, ns=(uploaded, uploaded))


def _replace(filesystem, source: str, destination: str) -> None:
    """Rename over ``destination`` (a local rename replaces it; HDFS-like ones need it gone first)."""
    from pyarrow import fs as pafs

    if filesystem.type_name != "local" and filesystem.get_file_info(destination).type != pafs.FileType.NotFound:
        filesystem.delete_file(destination)
    filesystem.move(source, destination)


def _delete_quietly(filesystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except OSError:  # never written, or already gone
        pass


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
