"""Dataset registry: specs, root discovery, load_raw, info and verify."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pdd_ray.data import registry
from pdd_ray.data.registry import DATASETS, complete_spec, dataset_info, find_root, get_spec, load_raw, verify
from pdd_ray.errors import UserError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def fake_home(tmp_path, monkeypatch):
    """Default roots under ~ must not see the developer's real cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_all_datasets_registered():
    assert DATASETS.names() == ["cifar10", "cifar100", "fashion_mnist", "image_folder", "tiny_imagenet"]
    with pytest.raises(UserError, match="cifar10, cifar100"):
        get_spec("mnist")


def test_reference_statistics():
    assert get_spec("fashion_mnist").mean == (0.2861,) and get_spec("fashion_mnist").std == (0.3530,)
    assert get_spec("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert get_spec("cifar100").mean == (0.5071, 0.4866, 0.4409)
    assert get_spec("tiny_imagenet").image_size == (64, 64) and get_spec("tiny_imagenet").num_classes == 200
    assert [n for n in DATASETS.names() if get_spec(n).zca] == ["cifar10", "cifar100"]
    assert get_spec("fashion_mnist").default_roots[0] == str(REAL_FASHION)
    assert get_spec("image_folder").channels is None  # read from the data


@pytest.mark.parametrize("name,fixture", [
    ("cifar10", "cifar10_dir"), ("cifar100", "cifar100_dir"), ("tiny_imagenet", "tiny_dir"),
    ("fashion_mnist", "fashion_gz"), ("image_folder", "image_folder_dir"),
])  # fmt: skip
def test_find_root_accepts_folder(name, fixture, request):
    written = request.getfixturevalue(fixture)
    assert find_root(name, written.root) == written.root
    assert find_root(name, str(written.root)) == written.root


@pytest.mark.parametrize("name,fixture", [("cifar10", "cifar10_dir"), ("cifar100", "cifar100_dir"), ("tiny_imagenet", "tiny_dir")])
def test_find_root_accepts_parent(name, fixture, request):
    written = request.getfixturevalue(fixture)
    assert find_root(name, written.parent) == written.root


def test_find_root_accepts_torchvision_fashion_layout(tmp_path, make_fashion):
    written = make_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    assert find_root("fashion_mnist", tmp_path / "tv") == written.root


def test_find_root_uses_default_cache(tmp_path, cifar10_dir):
    cache = tmp_path / "home" / ".cache" / "pdd_ray" / "cifar10"
    cache.mkdir(parents=True)
    shutil.move(cifar10_dir.root, cache)
    assert find_root("cifar10") == cache / "cifar-10-batches-py"


def test_missing_data_names_every_place_searched(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(UserError) as err:
        find_root("cifar100")
    message = str(err.value)
    assert f"{home}/.cache/pdd_ray/cifar100" in message
    assert f"{home}/.cache/pdd_ray/cifar100/cifar-100-python" in message
    assert get_spec("cifar100").how_to_get in message
    with pytest.raises(UserError, match=f"{tmp_path}/nowhere.*{tmp_path}/nowhere/FashionMNIST/raw.*apt-get"):
        find_root("fashion_mnist", tmp_path / "nowhere")


def test_given_root_wins_over_defaults(tmp_path):
    # Even though the real Fashion-MNIST may be installed, a wrong --data-root is an error.
    with pytest.raises(UserError, match="nowhere"):
        find_root("fashion_mnist", tmp_path / "nowhere")


def test_failed_download_is_user_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match=r"looked in: .*Download into .*network unreachable"):
        find_root("cifar10", tmp_path / "dl", download=True)
    with pytest.raises(UserError, match="no automatic download"):
        find_root("image_folder", tmp_path / "dl", download=True)


@pytest.mark.parametrize("name,fixture", [
    ("cifar10", "cifar10_dir"), ("cifar100", "cifar100_dir"), ("tiny_imagenet", "tiny_dir"),
    ("fashion_mnist", "fashion_raw"), ("image_folder", "image_folder_dir"),
])  # fmt: skip
def test_load_raw_round_trips(name, fixture, request):
    written = request.getfixturevalue(fixture)
    for split in ("train", "test"):
        # image_folder and our fashion folder have no known sub-folder name, so pass the folder itself.
        raw = load_raw(name, written.root if name in ("fashion_mnist", "image_folder") else written.parent, split)
        np.testing.assert_array_equal(raw.images.numpy(), written.images[split])
        np.testing.assert_array_equal(raw.labels.numpy(), written.labels[split])
        if written.class_names:
            assert raw.class_names == written.class_names


def test_load_raw_options(image_folder_dir, fashion_raw):
    raw = load_raw("image_folder", image_folder_dir.root, "train", image_size=4, grayscale=True)
    assert tuple(raw.images.shape) == (9, 1, 4, 4)
    with pytest.raises(UserError, match="does not take option"):
        load_raw("fashion_mnist", fashion_raw.root, "train", grayscale=True)
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_raw("fashion_mnist", fashion_raw.root, "val")


def test_load_raw_rejects_out_of_range_labels(fashion_raw, idx_encode):
    (fashion_raw.root / "t10k-labels-idx1-ubyte").write_bytes(idx_encode(np.full(10, 12, np.uint8)))
    with pytest.raises(UserError, match="outside 0..9"):
        load_raw("fashion_mnist", fashion_raw.root, "test")


def test_complete_spec_fills_image_folder_fields(image_folder_dir):
    train = load_raw("image_folder", image_folder_dir.root, "train")
    spec = complete_spec(get_spec("image_folder"), train)
    assert (spec.channels, spec.image_size, spec.num_classes) == (3, (6, 8), 3)
    x = train.to_float()
    assert np.allclose(spec.mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(spec.std, x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False).tolist(), atol=1e-6)
    assert complete_spec(get_spec("cifar10"), train) is get_spec("cifar10")


def test_dataset_info(fashion_gz):
    info = dataset_info("fashion_mnist", fashion_gz.root)
    assert info["root"] == str(fashion_gz.root) and info["num_classes"] == 10
    assert info["counts"] == {"train": 12, "test": 10} and info["errors"] == []
    sizes = {f["path"]: f["bytes"] for f in info["files"]}
    assert sizes["train-images-idx3-ubyte.gz"] == (fashion_gz.root / "train-images-idx3-ubyte.gz").stat().st_size


def test_dataset_info_counts_folders_and_reports_missing(tiny_dir, tmp_path):
    info = dataset_info("tiny_imagenet", tiny_dir.parent)
    assert info["counts"] == {"train": 12, "test": 6}
    val = next(f for f in info["files"] if f["path"] == "val/")
    assert val["files"] == 7 and val["bytes"] > 0  # 6 images + val_annotations.txt
    missing = dataset_info("cifar10", tmp_path / "nowhere")
    assert missing["root"] is None and "looked in" in missing["errors"][0]


def test_verify_reports_wrong_counts(fashion_gz, cifar10_dir, tiny_dir):
    assert verify("fashion_mnist", fashion_gz.root) == [
        "train: 12 examples, expected 60000",
        "test: 10 examples, expected 10000",
    ]
    assert "train: 20 examples, expected 50000" in verify("cifar10", cifar10_dir.root)
    problems = verify("tiny_imagenet", tiny_dir.root)
    assert "test: 6 examples, expected 10000" in problems
    assert any("3 class names, expected 200" in p for p in problems)


def test_verify_reports_missing_files_and_bad_labels(cifar10_dir, fashion_raw, idx_encode):
    (cifar10_dir.root / "data_batch_3").unlink()
    assert verify("cifar10", cifar10_dir.root) == [f"missing in {cifar10_dir.root}: data_batch_3"]
    (fashion_raw.root / "train-labels-idx1-ubyte").write_bytes(idx_encode(np.full(12, 10, np.uint8)))
    assert any("outside 0..9" in p for p in verify("fashion_mnist", fashion_raw.root))


def test_verify_reports_shape_and_corruption(fashion_raw, idx_encode, cifar10_dir):
    (fashion_raw.root / "t10k-images-idx3-ubyte").write_bytes(idx_encode(np.zeros((10, 32, 32), np.uint8)))
    assert any("(1, 32, 32), expected (1, 28, 28)" in p for p in verify("fashion_mnist", fashion_raw.root))
    (cifar10_dir.root / "test_batch").write_bytes(b"\x80\x02garbage")
    assert any(p.startswith("test: corrupt CIFAR pickle") for p in verify("cifar10", cifar10_dir.root))


def test_verify_ok_is_empty_list(image_folder_dir):
    assert verify("image_folder", image_folder_dir.root) == []
    assert verify("cifar10", image_folder_dir.root / "nowhere")[0].startswith("cifar10 data not found")


@pytest.mark.real_data
def test_real_fashion_mnist():
    if not REAL_FASHION.is_dir():
        pytest.skip(f"{REAL_FASHION} is not installed (apt-get install -y dataset-fashion-mnist)")
    train = load_raw("fashion_mnist", REAL_FASHION, "train")
    test = load_raw("fashion_mnist", REAL_FASHION, "test")
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and tuple(test.images.shape) == (10000, 1, 28, 28)
    assert len(train.class_names) == 10
    assert torch.equal(train.labels.unique(), torch.arange(10)) and torch.equal(test.labels.unique(), torch.arange(10))
    assert abs(train.to_float().mean().item() - get_spec("fashion_mnist").mean[0]) < 1e-3
    assert registry.verify("fashion_mnist", REAL_FASHION) == []
