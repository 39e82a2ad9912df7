"""Exports of a synthetic set for other tools, one registered format each, behind ``export_set``.

    parquet  a Hugging Face style table (PNG bytes, labels, stage, lr, exact values)  ``export/parquet.py``
    pt       MTT / DATM / DD-Ranking tensor files (weights_only-safe)                 ``export/torch_files.py``
    folder   class folders of PNGs for torchvision's ImageFolder                      ``export/folder.py``

Every format writes the images a network trains on (a multi-formation set decoded) unless
asked for the stored ones, and never writes a partial result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pdd_ray import synset as synset_io
from pdd_ray.export import folder, parquet, torch_files
from pdd_ray.export.rows import check_writable
from pdd_ray.registry import Registry


@dataclass(frozen=True)
class ExportFormat:
    """One format: its writer ``(synset, manifest, out, decoded) -> path``, default output name, and kind."""

    write: Callable
    default_name: str
    directory: bool  # writes a new directory (never into an existing one) rather than a file


FORMATS: Registry = Registry("export format")
FORMATS.register("parquet")(ExportFormat(parquet.export_parquet, parquet.DEFAULT_NAME, False))
FORMATS.register("pt")(ExportFormat(torch_files.export_torch, torch_files.DEFAULT_NAME, True))
FORMATS.register("folder")(ExportFormat(folder.export_folder, folder.DEFAULT_NAME, True))


def export_set(directory: str | Path, to: str = "parquet", out: str | Path | None = None,
               decoded: bool = True) -> Path:
    """Export the set in ``directory`` as format ``to`` into ``out`` (default: inside ``directory``)."""
    fmt = FORMATS.get(to)
    directory = Path(directory)
    out = Path(out) if out is not None else directory / fmt.default_name
    manifest = synset_io.read_manifest(directory)  # "not a synthetic set" before "cannot write there"
    check_writable(out, fmt.default_name, fmt.directory)  # before the images are read and converted
    return fmt.write(synset_io.load(directory), manifest, out, decoded)


def export_parquet(directory: str | Path, out: str | Path | None = None, decoded: bool = True) -> Path:
    """``export_set(directory, "parquet", out, decoded)``."""
    return export_set(directory, "parquet", out, decoded)


__all__ = ["FORMATS", "export_set", "export_parquet"]
