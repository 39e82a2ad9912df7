import json

import pyarrow.parquet as pq
import torch

from pdd_ray import synset as synset_io
from pdd_ray.export import export_parquet
from tests.test_synset import make_synset


def test_parquet_holds_every_image_exactly(tmp_path):
    original = make_synset(zca=True)
    directory = synset_io.save(original, tmp_path / "set")
    table = pq.read_table(export_parquet(directory))
    assert table.num_rows == 12
    rows = table.to_pydict()
    assert rows["stage"] == [1] * 6 + [2] * 6 and rows["class_name"][:2] == ["a", "a"]
    shape = json.loads(table.schema.metadata[b"pdd_ray.image_shape"])
    first = torch.tensor(rows["image"][0]).view(*shape)
    assert torch.equal(first, original.stages[0].images[0])
    pixels = torch.tensor(rows["pixels"][7]).view(*shape)
    expected = original.preprocessor.inverse(original.stages[1].images[1:2]).clamp(0, 1)[0]
    assert torch.allclose(pixels, expected, atol=1e-6)
    assert json.loads(table.schema.metadata[b"pdd_ray.manifest"])["dataset"] == "fashion_mnist"


def test_multi_formation_export_has_factor_squared_rows_per_stored_image(tmp_path):
    """An IDC set (factor 2) exports the 4 decoded patches of every stored image, as a network trains on them."""
    from pdd_ray.distill.formation import decode
    original = make_synset()
    for stage in original.stages:
        stage.info["factor"] = 2
    directory = synset_io.save(original, tmp_path / "set")
    table = pq.read_table(export_parquet(directory))
    assert table.num_rows == 12 * 4
    rows = table.to_pydict()
    assert rows["source"][:8] == [0, 0, 0, 0, 1, 1, 1, 1] and rows["patch"][:8] == [0, 1, 2, 3] * 2
    assert rows["label"][:8] == [0] * 8 and rows["stage"] == [1] * 24 + [2] * 24
    shape = json.loads(table.schema.metadata[b"pdd_ray.image_shape"])
    decoded = decode(original.stages[1].images, 2)
    assert torch.equal(torch.tensor(rows["image"][24 + 5]).view(*shape), decoded[5])
    assert json.loads(table.schema.metadata[b"pdd_ray.decoded"]) is True
    stored = pq.read_table(export_parquet(directory, tmp_path / "stored.parquet", decoded=False))
    assert stored.num_rows == 12 and set(stored.to_pydict()["patch"]) == {0}
