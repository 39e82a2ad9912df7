"""``--to folder``: class folders of PNGs that torchvision's ImageFolder reads with pdd-ray's labels."""

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from pdd_ray import synset as synset_io
from pdd_ray.export import export_set


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
