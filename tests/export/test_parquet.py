"""``--to parquet``: a Hugging Face style table whose PNGs decode to the stored pixels."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pdd_ray import synset as synset_io
from pdd_ray.distill.formation import decode
from pdd_ray.export import export_parquet, export_set
from tests.export.conftest import write_set


def _pixels_u8(synset, stage, row):
    expected = synset.preprocessor.inverse(synset.stages[stage].training_data()[0][row:row + 1]).clamp(0, 1)[0]
    return (expected * 255).round().to(torch.uint8)


@pytest.mark.parametrize("zca", [False, True])
def test_png_bytes_decode_to_the_stored_pixels_and_values_are_exact(tmp_path, zca):
    directory = write_set(tmp_path / "set", zca=zca)
    original = synset_io.load(directory)
    table = pq.read_table(export_parquet(directory))
    rows = table.to_pydict()
    assert table.num_rows == 12 and rows["stage"] == [1] * 6 + [2] * 6
    assert rows["class_name"][:2] == ["T-shirt/top"] * 2 and rows["lr"] == [0.02] * 6 + [0.03] * 6
    for index in (0, 7):
        decoded = np.asarray(Image.open(io.BytesIO(rows["image"][index]["bytes"])))
        stage, row = divmod(index, 6)
        assert np.array_equal(decoded, _pixels_u8(original, stage, row)[0].numpy())
        values = torch.tensor(rows["values"][index]).view(*rows["shape"][index])
        assert torch.equal(values, original.stages[stage].images[row])
    assert json.loads(table.schema.metadata[b"pdd_ray.manifest"])["dataset"] == "fashion_mnist"


def test_schema_carries_datasets_feature_types(stored_set):
    table = pq.read_table(export_set(stored_set, "parquet"))
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert features["label"] == {"names": ["T-shirt/top", "b", "c"], "_type": "ClassLabel"}
    assert set(features) == set(table.column_names)


def test_rgb_sets_export_rgb_pngs(tmp_path):
    directory = write_set(tmp_path / "set", channels=3)
    rows = pq.read_table(export_parquet(directory)).to_pydict()
    image = Image.open(io.BytesIO(rows["image"][3]["bytes"]))
    assert image.mode == "RGB" and image.size == (4, 4)


def test_multi_formation_export_has_factor_squared_rows_per_stored_image(tmp_path):
    """An IDC set (factor 2) exports the 4 decoded patches of every stored image, as a network trains on them."""
    directory = write_set(tmp_path / "set", factor=2)
    original = synset_io.load(directory)
    table = pq.read_table(export_parquet(directory))
    assert table.num_rows == 12 * 4
    rows = table.to_pydict()
    assert rows["source"][:8] == [0, 0, 0, 0, 1, 1, 1, 1] and rows["patch"][:8] == [0, 1, 2, 3] * 2
    assert rows["label"][:8] == [0] * 8 and rows["stage"] == [1] * 24 + [2] * 24
    decoded = decode(original.stages[1].images, 2)
    assert torch.equal(torch.tensor(rows["values"][24 + 5]).view(*rows["shape"][0]), decoded[5])
    assert json.loads(table.schema.metadata[b"pdd_ray.decoded"]) is True
    stored = pq.read_table(export_parquet(directory, tmp_path / "stored.parquet", decoded=False))
    assert stored.num_rows == 12 and set(stored.to_pydict()["patch"]) == {0}


def test_a_set_without_learned_lrs_has_null_lr(tmp_path):
    directory = write_set(tmp_path / "set", lrs=(None, None))
    assert set(pq.read_table(export_parquet(directory)).to_pydict()["lr"]) == {None}


def test_hugging_face_datasets_loads_the_table_with_its_features(tmp_path, monkeypatch):
    """``datasets.load_dataset("parquet")`` parses the declared features: PIL images of the stored pixels, named labels."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a local file: nothing to fetch
    datasets = pytest.importorskip("datasets")
    directory = write_set(tmp_path / "set")
    original = synset_io.load(directory)
    loaded = datasets.load_dataset("parquet", data_files=str(export_parquet(directory)),
                                   cache_dir=str(tmp_path / "hf_cache"))["train"]
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded.features["label"].names == ["T-shirt/top", "b", "c"]
    assert list(loaded["label"]) == [0, 0, 1, 1, 2, 2] * 2
    row = loaded[7]
    assert np.array_equal(np.asarray(row["image"]), _pixels_u8(original, 1, 1)[0].numpy())
    assert torch.equal(torch.tensor(row["values"]).view(*row["shape"]), original.stages[1].images[1])
