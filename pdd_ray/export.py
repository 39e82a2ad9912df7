"""Export a synthetic set to Parquet, one row per image, for use outside pdd-ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pdd_ray import synset as synset_io
from pdd_ray.provenance import atomic_write


def export_parquet(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write ``DIR/synthetic.parquet`` (or ``out``): stage, label, class name, network-space and pixel images.

    ``image`` holds the values exactly as the network sees them (flattened
    C*H*W float32); ``pixels`` holds the [0,1] pixel-space view (flattened,
    clipped). The manifest and the image shape go in the schema metadata.
    """
    directory = Path(directory)
    synset = synset_io.load(directory)
    manifest = synset_io.read_manifest(directory)
    out = Path(out) if out is not None else directory / "synthetic.parquet"
    columns: dict[str, list] = {"stage": [], "label": [], "class_name": [], "image": [], "pixels": []}
    for k, stage in enumerate(synset.stages, start=1):
        pixels = synset.preprocessor.inverse(stage.images).clamp(0, 1)
        for img, pix, label in zip(stage.images, pixels, stage.labels.tolist()):
            columns["stage"].append(k)
            columns["label"].append(label)
            columns["class_name"].append(synset.class_names[label] if label < len(synset.class_names) else str(label))
            columns["image"].append(img.flatten().tolist())
            columns["pixels"].append(pix.flatten().tolist())
    numel = 1
    for s in synset.image_shape:
        numel *= s
    schema = pa.schema([("stage", pa.int32()), ("label", pa.int64()), ("class_name", pa.string()),
                        ("image", pa.list_(pa.float32(), numel)), ("pixels", pa.list_(pa.float32(), numel))],
                       metadata={"pdd_ray.image_shape": json.dumps(list(synset.image_shape)),
                                 "pdd_ray.manifest": json.dumps(manifest)})
    table = pa.Table.from_pydict(columns, schema=schema)
    return atomic_write(out, lambda tmp: pq.write_table(table, tmp))
