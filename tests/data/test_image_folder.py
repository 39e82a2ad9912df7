"""Generic image folders: exact PNG round-trip, class order, common size, grayscale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pdd_ray.data import image_folder
from pdd_ray.errors import UserError


@pytest.mark.parametrize("split", ["train", "test"])
def test_png_round_trips_exactly(image_folder_dir, split):
    raw = image_folder.load_image_folder(image_folder_dir.root, split)
    assert tuple(raw.images.shape[1:]) == (3, 6, 8)  # C, H, W of the 8x6 PNGs
    np.testing.assert_array_equal(raw.images.numpy(), image_folder_dir.images[split])
    np.testing.assert_array_equal(raw.labels.numpy(), image_folder_dir.labels[split])
    assert raw.class_names == ("ant", "bee", "cat")


def test_files_in_natural_order_and_non_images_ignored(image_folder_dir):
    paths, labels, _ = image_folder.list_files(image_folder_dir.root, "train")
    assert [p.name for p in paths[:3]] == ["img_1.png", "img_2.png", "img_10.png"]
    assert len(paths) == 9 and labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_mixed_sizes_resized_to_first_image(tmp_path, make_image_folder, pil_decode):
    written = make_image_folder(tmp_path / "mixed", sizes=lambda i: (10, 7) if i == 0 else (5 + i, 4 + i))
    train = image_folder.load_image_folder(written.root, "train")
    test = image_folder.load_image_folder(written.root, "test")
    assert tuple(train.images.shape[1:]) == tuple(test.images.shape[1:]) == (3, 7, 10)
    # The first image already has the target size, so it is untouched.
    np.testing.assert_array_equal(train.images[0].numpy(), pil_decode(written.files["train"][0]))


def test_explicit_size_and_grayscale(image_folder_dir):
    raw = image_folder.load_image_folder(image_folder_dir.root, "train", image_size=(4, 5), grayscale=True)
    assert tuple(raw.images.shape) == (9, 1, 4, 5)
    square = image_folder.load_image_folder(image_folder_dir.root, "test", image_size=16)
    assert tuple(square.images.shape) == (6, 3, 16, 16)


def test_grayscale_values_match_pil(image_folder_dir, pil_decode):
    raw = image_folder.load_image_folder(image_folder_dir.root, "test", grayscale=True)
    expected = np.stack([pil_decode(p, "L") for p in image_folder_dir.files["test"]])
    np.testing.assert_array_equal(raw.images.numpy(), expected)


def test_other_extensions_case_insensitive(image_folder_dir):
    img = Image.fromarray(np.full((6, 8, 3), 200, np.uint8))
    img.save(image_folder_dir.root / "train" / "ant" / "z.BMP")
    img.save(image_folder_dir.root / "train" / "ant" / "z.JpG", format="JPEG")
    assert len(image_folder.list_files(image_folder_dir.root, "train")[0]) == 11


def test_test_class_missing_from_train_is_user_error(image_folder_dir):
    (image_folder_dir.root / "test" / "dog").mkdir()
    with pytest.raises(UserError, match="dog"):
        image_folder.load_image_folder(image_folder_dir.root, "test")


def test_test_split_may_lack_a_class(image_folder_dir):
    for p in (image_folder_dir.root / "test" / "bee").iterdir():
        p.unlink()
    (image_folder_dir.root / "test" / "bee").rmdir()
    raw = image_folder.load_image_folder(image_folder_dir.root, "test")
    assert raw.class_names == ("ant", "bee", "cat") and raw.labels.tolist() == [0, 0, 2, 2]


def test_empty_or_missing_is_user_error(tmp_path, image_folder_dir):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        image_folder.load_image_folder(tmp_path / "empty", "train")
    with pytest.raises(UserError, match="valid"):
        image_folder.load_image_folder(image_folder_dir.root, "valid")


def test_corrupt_image_is_user_error(image_folder_dir):
    bad = image_folder_dir.files["train"][4]
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match=bad.name):
        image_folder.load_image_folder(image_folder_dir.root, "train")
