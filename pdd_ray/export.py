"""Export a synthetic set to Parquet, one row per image, for use outside pdd-ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pdd_ray import synset as synset_io
from pdd_ray.provenance import atomic_write


def export_parquet(directory: str | Path, out: str | Path | None = None, decoded: bool = True) -> Path:
    """Write ``DIR/synthetic.parquet`` (or ``out``): stage, label, class name, network-space and pixel images.

    One row per image a network trains on: a multi-formation stage (IDC, factor f) gives f²
    rows per stored image, the decoded patches (``decoded=False`` writes the stored mosaics
    instead). ``source`` is the row's stored image within its stage and ``patch`` its patch
    (row-major, 0 when not decoded). ``image`` holds the values exactly as the network sees
    them (flattened C*H*W float32); ``pixels`` holds the [0,1] pixel-space view (flattened,
    clipped). The manifest, the image shape and whether rows are decoded go in the schema
    metadata.
    """
    directory = Path(directory)
    synset = synset_io.load(directory)
    manifest = synset_io.read_manifest(directory)
    out = Path(out) if out is not None else directory / "synthetic.parquet"
    columns: dict[str, list] = {"stage": [], "source": [], "patch": [], "label": [], "class_name": [], "image": [],
                                "pixels": []}
    for k, stage in enumerate(synset.stages, start=1):
        images, labels = stage.training_data() if decoded else (stage.images, stage.labels)
        per_image = len(labels) // max(len(stage.labels), 1)  # factor² when decoded, else 1
        pixels = synset.preprocessor.inverse(images).clamp(0, 1)
        for row, (img, pix, label) in enumerate(zip(images, pixels, labels.tolist())):
            columns["stage"].append(k)
            columns["source"].append(row // per_image)  # decode() keeps each stored image's patches together
            columns["patch"].append(row % per_image)
            columns["label"].append(label)
            columns["class_name"].append(synset.class_names[label] if label < len(synset.class_names) else str(label))
            columns["image"].append(img.flatten().tolist())
            columns["pixels"].append(pix.flatten().tolist())
    numel = 1
    for s in synset.image_shape:
        numel *= s
    schema = pa.schema([("stage", pa.int32()), ("source", pa.int64()), ("patch", pa.int32()), ("label", pa.int64()),
                        ("class_name", pa.string()),
                        ("image", pa.list_(pa.float32(), numel)), ("pixels", pa.list_(pa.float32(), numel))],
                       metadata={"pdd_ray.image_shape": json.dumps(list(synset.image_shape)),
                                 "pdd_ray.decoded": json.dumps(bool(decoded)),
                                 "pdd_ray.manifest": json.dumps(manifest)})
    table = pa.Table.from_pydict(columns, schema=schema)
    return atomic_write(out, lambda tmp: pq.write_table(table, tmp))
