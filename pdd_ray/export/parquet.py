"""``--to parquet``: a Hugging Face style table, one row per image, that ``datasets`` and pyarrow read.

    from datasets import load_dataset
    ds = load_dataset("parquet", data_files="runs/quickstart/synthetic/synthetic.parquet")["train"]
    ds[0]["image"]  # a PIL image in pixel space; ds.features["label"].names are the class names

Columns: ``image`` (PNG bytes in pixel space, 8-bit, as ``datasets.Image`` stores them),
``label``, ``class_name``, ``stage``, ``source`` and ``patch`` (see ``rows``), ``lr`` (the
stage's learned lr, null when none), ``shape`` (C, H, W) and ``values`` (the image exactly as the
network sees it, flattened float32: PNG rounds to 8 bits, these do not). The set's manifest,
image shape, decoding flag and the ``datasets`` feature types go in the schema metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pdd_ray.errors import UserError
from pdd_ray.export.rows import class_name, png_bytes, rows_of
from pdd_ray.provenance import atomic_write

DEFAULT_NAME = "synthetic.parquet"


def hf_features(class_names: list[str], numel: int) -> dict:
    """The ``datasets`` feature types of the table (so ``image`` decodes to PIL and ``label`` has names).

    Lists are declared as ``Sequence``, not ``List``: datasets < 4 knows only ``Sequence`` (``List`` fails
    with "Feature type 'List' not found") and datasets >= 4 still reads it, as a ``List``. ``values`` gives
    its length because its column is a fixed-size list.
    """
    value = lambda dtype: {"dtype": dtype, "_type": "Value"}  # noqa: E731
    return {"image": {"_type": "Image"}, "label": {"names": class_names, "_type": "ClassLabel"},
            "class_name": value("string"), "stage": value("int32"), "source": value("int64"),
            "patch": value("int32"), "lr": value("float64"),
            "shape": {"feature": value("int32"), "length": -1, "_type": "Sequence"},
            "values": {"feature": value("float32"), "length": numel, "_type": "Sequence"}}


def export_parquet(synset, manifest: dict, out: Path, decoded: bool = True) -> Path:
    """Write the table of ``synset`` to ``out`` (atomically)."""
    rows = rows_of(synset, decoded)
    names = [class_name(synset, c) for c in range(synset.num_classes)]
    shape = list(rows.values.shape[1:])
    columns = {
        "image": [{"bytes": png_bytes(p), "path": f"stage{s}_{i:06d}.png"}
                  for i, (p, s) in enumerate(zip(rows.pixels, rows.stage.tolist()))],
        "label": rows.label.tolist(), "class_name": [class_name(synset, c) for c in rows.label.tolist()],
        "stage": rows.stage.tolist(), "source": rows.source.tolist(), "patch": rows.patch.tolist(),
        "lr": rows.lr, "shape": [shape] * len(rows), "values": rows.values.flatten(1).tolist(),
    }
    numel = rows.values[0].numel() if len(rows) else 0
    schema = pa.schema(
        [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64()),
         ("class_name", pa.string()), ("stage", pa.int32()), ("source", pa.int64()), ("patch", pa.int32()),
         ("lr", pa.float64()), ("shape", pa.list_(pa.int32())), ("values", pa.list_(pa.float32(), numel))],
        metadata={"huggingface": json.dumps({"info": {"features": hf_features(names, numel)}}),
                  "pdd_ray.image_shape": json.dumps(shape), "pdd_ray.decoded": json.dumps(bool(decoded)),
                  "pdd_ray.manifest": json.dumps(manifest)})
    table = pa.Table.from_pydict(columns, schema=schema)
    try:
        return atomic_write(out, lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:  # the disk filled up, or the directory went away meanwhile
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
