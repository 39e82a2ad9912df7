"""Storage URIs: mirroring into a local cache, uploading, and `pdd-ray experts --out URI` (file:// and pyarrow's mock fs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from pdd_ray import storage
from pdd_ray.errors import UserError
from pdd_ray.storage import is_uri, local_mirror, mirror_path, resolve_input_dir, sync_directory, upload_directory


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own PDD_RAY_CACHE (never ~/.cache)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(storage.CACHE_ENV, str(root))
    return root


@pytest.fixture
def remote(tmp_path) -> Path:
    """A small store-like directory: two data files, a nested one, a manifest, and a writer's temp file."""
    root = tmp_path / "remote"
    (root / "sub").mkdir(parents=True)
    (root / "expert_00000.arrow").write_bytes(os.urandom(3000))
    (root / "expert_00001.arrow").write_bytes(os.urandom(5000))
    (root / "sub" / "images.gz").write_bytes(b"\x1f\x8b not really gzip")  # must be copied byte for byte
    (root / "manifest.json").write_text('{"experts": {}}')
    (root / ".expert_00002.arrow.abc.tmp").write_bytes(b"half")  # a write in progress
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _published(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if not k.split("/")[-1].startswith(".")}


@pytest.mark.parametrize("path,expected", [("s3://bucket/buf", True), ("gs://b/x", True), ("hdfs://nn:8020/x", True),
                                           ("file:///tmp/x", True), ("/tmp/x", False), ("runs/x", False),
                                           (Path("/tmp/x"), False), ("C:\\data", False)])
def test_is_uri(path, expected):
    assert is_uri(path) is expected


def test_mirror_path_is_keyed_by_the_uri_under_the_cache(cache, tmp_path):
    a, b = mirror_path("s3://bucket/runs/buf"), mirror_path("s3://other/runs/buf")
    assert a.parent == cache / "mirror" and a.name.startswith("buf-") and a != b
    assert mirror_path("s3://bucket/runs/buf/") == a
    assert mirror_path("s3://bucket/runs/buf", tmp_path / "elsewhere").parent == tmp_path / "elsewhere" / "mirror"


def test_local_mirror_copies_everything_but_temp_files(remote):
    mirror = local_mirror(remote.as_uri())
    assert _files(mirror) == _published(remote)
    assert not (mirror / ".expert_00002.arrow.abc.tmp").exists()


def test_mirroring_is_incremental_and_recopies_truncated_or_changed_files(remote, cache):
    uri, target = remote.as_uri(), mirror_path(remote.as_uri())
    assert len(sync_directory(uri, target)) == 4
    assert sync_directory(uri, target) == []  # nothing changed: nothing copied
    with open(target / "expert_00001.arrow", "r+b") as f:  # a copy cut short (a killed cp, a full disk)
        f.truncate(100)
    (remote / "manifest.json").write_text('{"experts": {"0": {}}}')  # the source moved on
    assert sync_directory(uri, target) == ["expert_00001.arrow", "manifest.json"]
    assert _files(target) == _published(remote)


def test_same_size_but_newer_source_is_recopied(remote):
    uri = remote.as_uri()
    mirror = local_mirror(uri)
    (remote / "manifest.json").write_text('{"experts": {"9": 1}}'[:len('{"experts": {}}')])  # same length
    later = (remote / "manifest.json").stat().st_mtime_ns + 10**9
    os.utime(remote / "manifest.json", ns=(later, later))
    assert sync_directory(uri, mirror) == ["manifest.json"]
    assert (mirror / "manifest.json").read_text() == (remote / "manifest.json").read_text()


def test_syncing_back_and_forth_copies_nothing(remote, tmp_path):
    dest = (tmp_path / "bucket" / "buf").as_uri()
    upload_directory(remote, dest)
    assert sync_directory(dest, remote) == [] and upload_directory(remote, dest) == []


def test_manifest_is_copied_last(remote, monkeypatch):
    order = []
    original = storage._copy_file
    monkeypatch.setattr(storage, "_copy_file", lambda sf, s, df, d, *rest: (order.append(Path(d).name),
                                                                             original(sf, s, df, d, *rest)))
    local_mirror(remote.as_uri())
    assert order[-1] == "manifest.json" and len(order) == 4


class _FailingSource:
    """A source filesystem whose stream breaks after the first chunk (a dropped connection)."""

    class _Stream:
        def __init__(self):
            self.calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset")
            return b"x" * n

    def open_input_stream(self, path, compression=None):
        return self._Stream()


def test_an_interrupted_copy_leaves_neither_a_file_nor_a_temp(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "CHUNK_BYTES", 16)
    with pytest.raises(OSError, match="connection reset"):
        storage._copy_file(_FailingSource(), "x", pafs.LocalFileSystem(), str(tmp_path / "out" / "expert.arrow"))
    assert list((tmp_path / "out").iterdir()) == []


def test_leftover_partial_files_are_ignored_and_the_file_copied(remote, cache):
    target = mirror_path(remote.as_uri())
    target.mkdir(parents=True)
    (target / ".expert_00000.arrow.dead.partial").write_bytes(b"killed mid-copy")
    assert "expert_00000.arrow" in sync_directory(remote.as_uri(), target)
    assert (target / "expert_00000.arrow").read_bytes() == (remote / "expert_00000.arrow").read_bytes()


def test_upload_directory_to_a_file_uri_is_incremental(remote, tmp_path):
    dest = (tmp_path / "bucket" / "buf").as_uri()
    assert len(upload_directory(remote, dest)) == 4
    assert upload_directory(remote, dest) == []
    (remote / "expert_00002.arrow").write_bytes(b"new expert")
    assert upload_directory(remote, dest) == ["expert_00002.arrow"]
    assert _files(tmp_path / "bucket" / "buf") == _published(remote)


def test_resolve_input_dir(remote, cache):
    assert resolve_input_dir(str(remote)) == remote
    assert resolve_input_dir(remote) == remote
    assert resolve_input_dir(remote.as_uri()) == remote  # file:// is read in place, not copied
    assert not (cache / "mirror").exists()


@pytest.fixture
def mock_fs(monkeypatch):
    """pyarrow's in-memory filesystem behind mock:// URIs, shared by every call in the test."""
    filesystem = pafs._MockFileSystem()
    real = storage._from_uri

    def from_uri(uri):
        if uri.startswith("mock://"):
            return filesystem, uri[len("mock://"):].rstrip("/")
        return real(uri)

    monkeypatch.setattr(storage, "_from_uri", from_uri)
    return filesystem


def test_round_trip_through_an_in_memory_filesystem(remote, mock_fs):
    assert len(upload_directory(remote, "mock://bucket/runs/buf")) == 4
    assert upload_directory(remote, "mock://bucket/runs/buf") == []
    assert mock_fs.get_file_info("bucket/runs/buf/sub/images.gz").size == len((remote / "sub/images.gz").read_bytes())
    mirror = resolve_input_dir("mock://bucket/runs/buf")
    assert mirror == mirror_path("mock://bucket/runs/buf") and _files(mirror) == _published(remote)
    assert sync_directory("mock://bucket/runs/buf", mirror) == []


@pytest.mark.parametrize("uri,fragment", [("mock://bucket/none", "no such directory"),
                                          ("nosuchscheme://x/y", "cannot open")])
def test_bad_sources_are_user_errors(uri, fragment, mock_fs):
    with pytest.raises(UserError, match=fragment):
        local_mirror(uri)


def test_a_file_is_not_a_directory(remote):
    with pytest.raises(UserError, match="not a directory"):
        local_mirror((remote / "manifest.json").as_uri())


@pytest.mark.slow
def test_experts_out_uri_builds_locally_and_uploads_after_each_expert(tmp_path, tiny_fashion_root, monkeypatch,
                                                                      capsys):
    import ray

    from pdd_ray.cli import main
    from pdd_ray.experts import buffer
    from pdd_ray.trajectories import TrajectoryStore

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uploads = []
    real_upload = buffer.upload_directory
    monkeypatch.setattr(buffer, "upload_directory", lambda local, uri: uploads.append(real_upload(local, uri)))
    out = (tmp_path / "bucket" / "experts").as_uri()
    argv = ["experts", "--config", "default", "--out", out, f"data.root={tiny_fashion_root}", "num_experts=2",
            "model.width=4", "model.depth=2", "recipe.epochs=1", "recipe.batch_size=64", "data.val_size=40",
            "device=cpu", "augment.dsa=false"]
    started = not ray.is_initialized()
    if started:  # one local Ray for both runs (ray_session reuses it)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        assert main(argv) == 0
        assert "2 expert(s)" in capsys.readouterr().out
        first = list(uploads)
        # a rerun with one more expert downloads nothing new, trains only expert 2 and uploads it
        uploads.clear()
        assert main(argv + ["num_experts=3"]) == 0
    finally:
        if started:
            ray.shutdown()
    assert len(first) == 3 and first[0][-1] == "manifest.json" and len(first[0]) == 2  # one expert + manifest
    assert "expert_00002.arrow" in uploads[0] and "expert_00000.arrow" not in sum(uploads, [])
    assert TrajectoryStore.open(tmp_path / "bucket" / "experts").completed() == [0, 1, 2]
