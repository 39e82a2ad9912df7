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
