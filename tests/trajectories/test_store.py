"""The expert-trajectory store: bit-exact round trips, random access, crash safety, refusals."""

import json
import os

import pyarrow as pa
import pytest
import torch

from pdd_ray.errors import UserError
from pdd_ray.models.functional import ParamLayout
from pdd_ray.trajectories import TrajectoryStore
from pdd_ray.trajectories import store as store_module

LAYOUT = ParamLayout(("conv.weight", "conv.bias", "fc.weight"), ((4, 1, 3, 3), (4,), (10, 16)))
SNAPSHOTS = 5


def _create(directory, layout=LAYOUT, dtype="float32", recipe=None):
    return TrajectoryStore.create(directory, dataset="fashion_mnist", preprocessing={"mean": [0.5]},
                                  model={"arch": "convnet", "image_shape": (1, 8, 8)}, layout=layout,
                                  recipe=recipe or {"lr": 0.01, "epochs": SNAPSHOTS - 1},
                                  num_snapshots=SNAPSHOTS, dtype=dtype)


def _trajectory(seed=0):
    return torch.randn(SNAPSHOTS, LAYOUT.numel, generator=torch.Generator().manual_seed(seed))


def _flip_byte_of_row(path, row: torch.Tensor) -> None:
    """Damage one stored snapshot by finding its raw bytes in the file (random data: unique)."""
    data = bytearray(path.read_bytes())
    at = data.find(row.numpy().tobytes())
    assert at >= 0
    data[at + 8] ^= 0xFF
    path.write_bytes(bytes(data))


def test_float32_round_trip_is_bit_exact(tmp_path):
    traj = _trajectory()
    with _create(tmp_path / "s") as store:
        store.write_expert(0, traj, {"seed": 7, "init": "random", "test_accuracy": 0.5})
    store = TrajectoryStore.open(tmp_path / "s", layout=LAYOUT)
    assert torch.equal(store.trajectory(0), traj)
    assert torch.equal(store.snapshot(0, 3), traj[3])
    assert torch.equal(store.trajectory(0, [4, 1]), traj[[4, 1]])
    assert store.info(0)["seed"] == 7 and store.info(0)["status"] == "complete"
    assert store.summary_rows() == [{"id": 0, "snapshots": SNAPSHOTS, "init": "random", "test_acc": 0.5,
                                     "test_accuracy": 0.5, "bytes": store.info(0)["bytes"]}]
    assert store.verify() == []
    store.close()


@pytest.mark.parametrize("dtype, torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_half_precision_round_trip_equals_the_cast(tmp_path, dtype, torch_dtype):
    traj = _trajectory()
    with _create(tmp_path / dtype, dtype=dtype) as store:
        store.write_expert(0, traj, {})
        out = store.trajectory(0)
    assert out.dtype == torch.float32
    assert torch.equal(out, traj.to(torch_dtype).float())
    assert TrajectoryStore.open(tmp_path / dtype).dtype == dtype


def test_float16_file_is_about_half_the_bytes(tmp_path):
    big = ParamLayout(("fc.weight",), ((100, 200),))  # large enough that per-batch headers do not matter
    sizes = {}
    for dtype in ("float32", "float16"):
        with _create(tmp_path / dtype, layout=big, dtype=dtype) as store:
            store.write_expert(0, torch.randn(SNAPSHOTS, big.numel), {})
            sizes[dtype] = store.info(0)["bytes"]
    assert 0.4 < sizes["float16"] / sizes["float32"] < 0.6


def test_one_batch_per_snapshot_and_reads_touch_only_that_batch(tmp_path):
    traj = _trajectory()
    store = _create(tmp_path / "s")
    store.write_expert(0, traj, {})
    path = tmp_path / "s" / "expert_00000.arrow"
    with pa.ipc.open_file(pa.memory_map(str(path))) as reader:
        assert reader.num_record_batches == SNAPSHOTS
        assert reader.schema.field("params").type == pa.list_(pa.float32(), LAYOUT.numel)
        assert reader.schema.metadata[b"dtype"] == b"float32"
        assert reader.get_batch(2).column(0)[0].as_py() == 2
    _flip_byte_of_row(path, traj[1])
    fresh = TrajectoryStore.open(tmp_path / "s")
    # the damaged row's crc fails, but every other snapshot still reads fine
    assert torch.equal(fresh.snapshot(0, 3), traj[3])
    assert torch.equal(fresh.snapshot(0, 0), traj[0])
    with pytest.raises(UserError, match="corrupted"):
        fresh.snapshot(0, 1)


def test_corrupted_snapshot_is_reported_by_verify(tmp_path):
    traj = _trajectory()
    store = _create(tmp_path / "s")
    store.write_expert(0, traj, {})
    store.write_expert(1, _trajectory(1), {})
    _flip_byte_of_row(tmp_path / "s" / "expert_00000.arrow", traj[4])
    with pytest.raises(UserError, match="corrupted"):
        store.snapshot(0, 4)
    problems = store.verify()
    assert len(problems) == 1 and "expert 0" in problems[0] and "epochs 4" in problems[0]
    assert store.verify(1) == []


def test_crash_before_rename_leaves_no_expert(tmp_path, monkeypatch):
    store = _create(tmp_path / "s")

    def crash(*args):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.write_expert(0, _trajectory(), {})
    monkeypatch.undo()
    assert store.completed() == [] and store.missing(2) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json"]


def test_crash_before_manifest_update_leaves_no_complete_expert(tmp_path, monkeypatch):
    store = _create(tmp_path / "s")
    store.write_expert(0, _trajectory(0), {})

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(store_module, "write_json", crash)
    with pytest.raises(OSError, match="simulated"):
        store.write_expert(1, _trajectory(1), {})
    monkeypatch.undo()
    assert (tmp_path / "s" / "expert_00001.arrow").is_file()  # renamed, but never vouched for
    assert store.completed() == [0]
    assert TrajectoryStore.open(tmp_path / "s").missing(3) == [1, 2]
    with pytest.raises(UserError, match="not in"):
        store.snapshot(1, 0)
    # resume: a later write completes it
    resumed = _create(tmp_path / "s")
    resumed.write_expert(1, _trajectory(1), {})
    assert resumed.completed() == [0, 1]
    assert torch.equal(TrajectoryStore.open(tmp_path / "s").trajectory(1), _trajectory(1))


def test_crash_while_rewriting_unlists_the_old_entry(tmp_path, monkeypatch):
    store = _create(tmp_path / "s")
    store.write_expert(0, _trajectory(0), {})
    calls = []
    real = store_module.write_json

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "write_json", crash_on_second)
    with pytest.raises(OSError):
        store.write_expert(0, _trajectory(5), {})
    monkeypatch.undo()
    # the new file is in place but the manifest no longer calls expert 0 complete
    assert TrajectoryStore.open(tmp_path / "s").completed() == []
    store.write_expert(0, _trajectory(5), {})
    assert torch.equal(store.trajectory(0), _trajectory(5)) and store.verify() == []


def test_rewriting_an_id_replaces_it_even_with_a_cached_reader(tmp_path):
    store = _create(tmp_path / "s")
    store.write_expert(0, _trajectory(0), {"seed": 0})
    assert torch.equal(store.snapshot(0, 2), _trajectory(0)[2])  # opens the memory map
    store.write_expert(0, _trajectory(9), {"seed": 9})
    assert torch.equal(store.snapshot(0, 2), _trajectory(9)[2])
    assert store.info(0)["seed"] == 9 and store.verify() == []


def test_stray_temp_files_are_ignored_and_cleaned_by_create(tmp_path):
    _create(tmp_path / "s").write_expert(0, _trajectory(), {})
    stray = tmp_path / "s" / ".expert_00001.arrow.abc123.tmp"
    stray.write_bytes(b"half written")
    assert TrajectoryStore.open(tmp_path / "s").completed() == [0]
    assert stray.exists()  # readers leave it: the writer may be mid-write
    assert _create(tmp_path / "s").completed() == [0]
    assert not stray.exists()


def test_create_refuses_a_changed_configuration(tmp_path):
    _create(tmp_path / "s").write_expert(0, _trajectory(), {})
    assert _create(tmp_path / "s").completed() == [0]  # identical config resumes
    with pytest.raises(UserError, match=r"recipe.*recipe\.lr"):
        _create(tmp_path / "s", recipe={"lr": 0.1, "epochs": SNAPSHOTS - 1})
    other = ParamLayout(LAYOUT.names, ((8, 1, 3, 3), (4,), (10, 16)))
    with pytest.raises(UserError, match="layout.*conv.weight"):
        _create(tmp_path / "s", layout=other)
    with pytest.raises(UserError, match="dtype"):
        _create(tmp_path / "s", dtype="float16")


def test_open_refuses_a_different_layout_naming_the_parameter(tmp_path):
    _create(tmp_path / "s")
    renamed = ParamLayout(("conv.weight", "conv.bias", "head.weight"), LAYOUT.shapes)
    with pytest.raises(UserError, match="head.weight"):
        TrajectoryStore.open(tmp_path / "s", layout=renamed)
    with pytest.raises(UserError, match="no manifest"):
        TrajectoryStore.open(tmp_path / "nothing")


def test_bounds_and_shapes_give_clear_errors(tmp_path):
    store = _create(tmp_path / "s")
    store.write_expert(0, _trajectory(), {})
    with pytest.raises(UserError, match="expert 3"):
        store.snapshot(3, 0)
    with pytest.raises(UserError, match="out of range"):
        store.snapshot(0, SNAPSHOTS)
    with pytest.raises(UserError, match="out of range"):
        store.snapshot(0, -1)
    with pytest.raises(ValueError, match="shape"):
        store.write_expert(1, torch.zeros(SNAPSHOTS - 1, LAYOUT.numel), {})
    with pytest.raises(ValueError, match="reserved"):
        store.write_expert(1, _trajectory(), {"sha256": "x"})


def test_no_file_in_the_store_is_a_pickle(tmp_path):
    store = _create(tmp_path / "s", dtype="bfloat16")
    for i in range(3):
        store.write_expert(i, _trajectory(i), {"seed": i})
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["format"] == "pdd-ray/trajectory-store" and sorted(manifest["experts"]) == ["0", "1", "2"]
    assert manifest["layout"] == LAYOUT.to_dict() and manifest["num_snapshots"] == SNAPSHOTS
    for path in (tmp_path / "s").iterdir():
        head = path.read_bytes()[:6]
        if head != b"ARROW1":
            json.loads(path.read_text())  # anything not Arrow must be JSON
