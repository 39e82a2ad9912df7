"""The synthetic-set directory: per-stage safetensors files plus a JSON manifest. No pickles.

    DIR/manifest.json           dataset, preprocessing, stages (file, ipc, lr), config, seed, versions
    DIR/preprocess.safetensors  mean/std (and ZCA matrices) to map images back to pixels
    DIR/stage_<k>.safetensors   images as the network sees them (float32 [n,C,H,W]) + int64 labels

Every file is written atomically and the manifest last, so a crash never
leaves a stage that looks finished but is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.errors import UserError
from pdd_ray.provenance import atomic_write, now, read_manifest_file, versions, write_json
from pdd_ray.synset_checks import check_manifest, check_preprocess, check_stage_tensors
from pdd_ray.untrusted import member_file

FORMAT = "pdd-ray/synthetic-set"
FORMAT_VERSION = 1


@dataclass
class Stage:
    """One distilled (or selected) set: images in network space, labels, and its learned lr."""

    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None = None
    info: dict = field(default_factory=dict)

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels as a network trains on them (IDC's multi-formation decoded)."""
        factor = int(self.info.get("factor", 1))
        if factor == 1:
            return self.images, self.labels
        from pdd_ray.distill.formation import decode, decode_labels
        return decode(self.images, factor), decode_labels(self.labels, factor)

    @property
    def ipc(self) -> int:
        """Stored images per class (the largest class count)."""
        return int(torch.bincount(self.labels).max()) if len(self.labels) else 0


@dataclass
class SyntheticSet:
    """Stages S_1..S_P of one dataset, with the preprocessing needed to view them."""

    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    preprocessor: Preprocessor
    stages: list[Stage] = field(default_factory=list)
    method: str = ""
    config: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the stored images."""
        return tuple(self.stages[0].images.shape[1:]) if self.stages else ()

    def union(self, upto: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images and labels of S_1 ∪ … ∪ S_upto (all stages by default), decoded."""
        pairs = [s.training_data() for s in self.stages[:upto]]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def save(synset: SyntheticSet, directory: str | Path) -> Path:
    """Write ``synset`` into ``directory`` (stage files first, manifest last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "preprocess.safetensors",
                 lambda tmp: save_file(synset.preprocessor.to_tensors(), str(tmp)))
    for k, stage in enumerate(synset.stages, start=1):
        tensors = {"images": stage.images.detach().float().cpu().contiguous(),
                   "labels": stage.labels.detach().long().cpu().contiguous()}
        atomic_write(directory / f"stage_{k}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))
    write_json(directory / "manifest.json", _manifest(synset))
    return directory


def _manifest(synset: SyntheticSet) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": now(),
        "dataset": synset.dataset, "num_classes": synset.num_classes, "class_names": list(synset.class_names),
        "image_shape": list(synset.image_shape), "method": synset.method, "seed": synset.seed,
        "preprocessing": {**synset.preprocessor.describe(), "file": "preprocess.safetensors"},
        "stages": [{"file": f"stage_{k}.safetensors", "count": len(s.labels), "ipc": s.ipc, "lr": s.lr, **s.info}
                   for k, s in enumerate(synset.stages, start=1)],
        "config": synset.config, "versions": versions(),
    }


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a synthetic-set directory, with user-facing errors."""
    return read_manifest_file(directory, FORMAT, "synthetic-set")


def load(directory: str | Path) -> SyntheticSet:
    """Read a synthetic set written by ``save`` (or by anyone: every file and tensor is checked first)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    check_manifest(manifest, directory)
    preprocessing = manifest.get("preprocessing") if isinstance(manifest.get("preprocessing"), dict) else {}
    path = member_file(directory, preprocessing.get("file"), "the preprocessing file")
    tensors = _load_tensors(path)
    check_preprocess(tensors, manifest, path)
    pre = Preprocessor.from_tensors(tensors)
    stages = []
    for entry in manifest["stages"]:
        path = member_file(directory, entry.get("file"), "a stage file")
        tensors = _load_tensors(path)
        check_stage_tensors(tensors, entry, manifest, path)
        info = {k: v for k, v in entry.items() if k not in ("file", "count", "ipc", "lr")}
        stages.append(Stage(tensors["images"], tensors["labels"], entry.get("lr"), info))
    return SyntheticSet(manifest["dataset"], manifest["num_classes"], tuple(manifest["class_names"]), pre,
                        stages, manifest.get("method", ""), manifest.get("config", {}), manifest.get("seed", 0))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"synthetic set is incomplete: {path} is missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"cannot read {path}: {exc}") from None
