"""``--to folder``: class folders of PNGs that torchvision's ImageFolder reads with pdd-ray's labels."""

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from pdd_ray import synset as synset_io
from pdd_ray.distill.formation import decode
from pdd_ray.export import export_set
from tests.export.conftest import write_set


def test_image_folder_reads_every_image_with_its_label(stored_set, tmp_path):
    out = export_set(stored_set, "folder", tmp_path / "folder")
    folder = ImageFolder(str(out))
    assert folder.classes == ["000_T-shirt_top", "001_b", "002_c"]
    original = synset_io.load(stored_set)
    images, labels = original.union()
    assert sorted(label for _, label in folder.samples) == sorted(labels.tolist())
    path, label = next((p, lbl) for p, lbl in folder.samples if p.endswith("s2_000007.png"))
    assert label == labels[7].item()
    expected = (original.preprocessor.inverse(images[7:8]).clamp(0, 1)[0, 0] * 255).round().to(torch.uint8)
    assert np.array_equal(np.asarray(folder.loader(path).convert("L")), expected.numpy())


def test_multi_formation_export_has_factor_squared_pngs_per_stored_image(tmp_path):
    """An IDC set (factor 2): 4 decoded patches of every stored image, each in its image's class folder."""
    directory = write_set(tmp_path / "set", factor=2)
    original = synset_io.load(directory)
    folder = ImageFolder(str(export_set(directory, "folder", tmp_path / "folder")))
    assert len(folder.samples) == 12 * 4
    per_class = np.bincount([label for _, label in folder.samples])
    assert per_class.tolist() == [2 * 2 * 4] * 3  # 2 stored images per class and stage, 2 stages, 4 patches
    decoded = decode(original.stages[1].images, 2)  # stage 2's rows follow stage 1's 24
    path = next(p for p, _ in folder.samples if p.endswith("s2_000029.png"))
    expected = (original.preprocessor.inverse(decoded[5:6]).clamp(0, 1)[0, 0] * 255).round().to(torch.uint8)
    assert np.array_equal(np.asarray(folder.loader(path).convert("L")), expected.numpy())
    stored = ImageFolder(str(export_set(directory, "folder", tmp_path / "stored", decoded=False)))
    assert len(stored.samples) == 12
