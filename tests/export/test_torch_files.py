"""``--to pt``: MTT / DATM style tensor files that load with ``weights_only=True``."""

import json
import math

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.distill.formation import decode, decode_labels
from pdd_ray.errors import UserError
from pdd_ray.export import export_set
from tests.export.conftest import write_set


def test_tensor_files_hold_the_union_labels_stages_and_lrs(stored_set, tmp_path):
    out = export_set(stored_set, "pt", tmp_path / "pt")
    load = lambda name: torch.load(out / name, weights_only=True)  # noqa: E731
    original = synset_io.load(stored_set)
    images, labels = original.union()
    assert torch.equal(load("images_best.pt"), images) and torch.equal(load("labels_best.pt"), labels)
    assert load("stages.pt").tolist() == [1] * 6 + [2] * 6
    assert load("lr_best.pt").item() == pytest.approx(0.03) and load("stage_lrs.pt").tolist() == pytest.approx(
        [0.02, 0.03])
    description = json.loads((out / "export.json").read_text())
    assert description["manifest"]["dataset"] == "fashion_mnist" and "lr_best.pt" in description["files"]


def test_sets_without_lrs_have_no_lr_file_and_nan_stage_lrs(tmp_path):
    out = export_set(write_set(tmp_path / "set", lrs=(None, 0.5)), "pt", tmp_path / "pt")
    assert (out / "lr_best.pt").is_file()
    assert math.isnan(torch.load(out / "stage_lrs.pt", weights_only=True)[0].item())
    out = export_set(write_set(tmp_path / "set2", lrs=(0.5, None)), "pt", tmp_path / "pt2")
    assert not (out / "lr_best.pt").exists()


def test_an_existing_output_directory_is_refused_and_left_alone(stored_set, tmp_path):
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="already exists"):
        export_set(stored_set, "pt", tmp_path / "pt")
    assert (tmp_path / "pt" / "mine.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_multi_formation_export_has_factor_squared_rows_per_stored_image(tmp_path):
    """An IDC set (factor 2) exports the 4 decoded patches of every stored image, as a network trains on them."""
    directory = write_set(tmp_path / "set", factor=2)
    original = synset_io.load(directory)
    out = export_set(directory, "pt", tmp_path / "pt")
    load = lambda name: torch.load(out / name, weights_only=True)  # noqa: E731
    decoded = torch.cat([decode(stage.images, 2) for stage in original.stages])
    assert load("images_best.pt").shape == (12 * 4, 1, 4, 4) and torch.equal(load("images_best.pt"), decoded)
    labels = torch.cat([decode_labels(stage.labels, 2) for stage in original.stages])
    assert torch.equal(load("labels_best.pt"), labels) and load("labels_best.pt")[:8].tolist() == [0] * 8
    assert load("stages.pt").tolist() == [1] * 24 + [2] * 24
    assert json.loads((out / "export.json").read_text())["decoded"] is True
    stored = export_set(directory, "pt", tmp_path / "stored", decoded=False)
    stored_images = torch.cat([stage.images for stage in original.stages])
    assert torch.equal(torch.load(stored / "images_best.pt", weights_only=True), stored_images)
