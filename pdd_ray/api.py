"""The Python front door: load a distilled set and use it anywhere, or evaluate it as the CLI does.

    import pdd_ray, torch, torchvision
    ds = pdd_ray.load("runs/quickstart/synthetic")   # a set written by `pdd-ray run` / `baseline`
    images, labels = ds.images(), ds.labels()          # what the network trains on: every stage, decoded
    pixels = ds.images(space="pixels")                 # the same images in [0, 1] pixel space
    loader = torch.utils.data.DataLoader(ds.as_dataset(), batch_size=256, shuffle=True)
    test = torchvision.datasets.FashionMNIST("data", train=False, transform=ds.transform)
    print(ds.lrs, ds.recipe.protocol().describe())     # learned lrs, the evaluation recipe in words
    print(pdd_ray.evaluate(ds).mean)                   # the run's own protocol, as `pdd-ray evaluate`
    pdd_ray.evaluate(ds, figures=["dd-ranking"]).figures  # + random real at equal budget, no augmentation

``ds.transform`` maps a real image (PIL, H x W (x C) uint8 array, or a C x H x W tensor in
[0, 1]) into the space the synthetic images live in (the set's own normalisation or ZCA,
never refitted): apply it to real test images before feeding a network trained on the set.

Like ``cli.py`` this module sits above the jobs it calls; library code never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pdd_ray import synset as synset_io
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.errors import UserError
from pdd_ray.evaluation import EvalResult
from pdd_ray.evaluation.recorded import RecordedRecipe, recorded_recipe
from pdd_ray.jobs.evaluate import expand_figures, extra_figures, load_test_split
from pdd_ray.models import model_factory
from pdd_ray.train.loop import resolve_device

SPACES = ("network", "pixels")


class ToNetworkSpace:
    """A torchvision-style transform: one real image -> the network space of a distilled set."""

    def __init__(self, preprocessor: Preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, image) -> torch.Tensor:
        pixels = _to_pixels(image)
        return self.preprocessor(pixels.unsqueeze(0))[0]

    def __repr__(self) -> str:
        return f"ToNetworkSpace({self.preprocessor.describe()})"


def _to_pixels(image) -> torch.Tensor:
    """C x H x W float in [0, 1] from a PIL image, a uint8 array (H x W or H x W x C) or a tensor."""
    if isinstance(image, torch.Tensor):
        return image.float() / 255 if image.dtype == torch.uint8 else image.float()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.array(array.transpose(2, 0, 1)))  # a writable copy
    return tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()


class DistilledSet:
    """A synthetic set on disk, as tensors and datasets for any PyTorch code (see the module docstring)."""

    def __init__(self, synset: synset_io.SyntheticSet, directory: Path):
        self.synset, self.directory = synset, directory

    dataset = property(lambda self: self.synset.dataset, doc="The dataset the set was distilled from.")
    num_classes = property(lambda self: self.synset.num_classes, doc="Number of classes.")
    class_names = property(lambda self: self.synset.class_names, doc="Class names, by label.")
    method = property(lambda self: self.synset.method, doc="How the set was made (base method or selector).")
    stages = property(lambda self: self.synset.stages, doc="The stored stages S_1..S_P (``synset.Stage``).")
    lrs = property(lambda self: [s.lr for s in self.synset.stages], doc="Each stage's learned lr (None: none).")
    image_shape = property(lambda self: self.synset.image_shape, doc="(C, H, W) of the stored images.")

    @property
    def transform(self) -> ToNetworkSpace:
        """The set's preprocessing as a transform for real images (pixels in [0, 1] -> network space).

        It inverts ``images(space="pixels")``: a synthetic image taken to pixels comes back unchanged.

        >>> ds = pdd_ray.load(directory)
        >>> pixels = ds.images(1, space="pixels")[0]
        >>> torch.allclose(ds.transform(pixels), ds.images(1)[0], atol=1e-5)
        True

        A uint8 image (here an all-white 28 x 28 grey-scale array) is scaled to [0, 1] first:

        >>> import numpy as np
        >>> white = np.full((28, 28), 255, dtype=np.uint8)
        >>> ds.transform(white).shape
        torch.Size([1, 28, 28])
        >>> torch.equal(ds.transform(white), ds.transform(torch.ones(1, 28, 28)))
        True
        """
        return ToNetworkSpace(self.synset.preprocessor)

    @property
    def recipe(self) -> RecordedRecipe:
        """Network, augmentation and evaluation protocol the run recorded (``.protocol()`` for the object)."""
        return recorded_recipe(self.synset.config)

    def images(self, stage: int | None = None, space: str = "network") -> torch.Tensor:
        """Training images of stage ``stage`` (1-based) or of every stage, decoded as the network sees them."""
        if space not in SPACES:
            raise UserError(f"space must be one of {', '.join(SPACES)}, got '{space}'")
        images = self._training_data(stage)[0]
        return self.synset.preprocessor.inverse(images) if space == "pixels" else images

    def labels(self, stage: int | None = None) -> torch.Tensor:
        """Labels of ``images(stage)``."""
        return self._training_data(stage)[1]

    def as_dataset(self, stage: int | None = None, space: str = "network") -> TensorDataset:
        """A ``torch.utils.data.Dataset`` of (image, label) pairs, for a ``DataLoader``.

        >>> ds = pdd_ray.load(directory)
        >>> image, label = ds.as_dataset(stage=2)[0]
        >>> image.shape, int(label)
        (torch.Size([1, 28, 28]), 0)
        >>> loader = torch.utils.data.DataLoader(ds.as_dataset(), batch_size=16)
        >>> [len(labels) for _, labels in loader]
        [16, 16, 8]
        """
        return TensorDataset(self.images(stage, space), self.labels(stage))

    def _training_data(self, stage: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if stage is None:
            return self.synset.union()
        if not isinstance(stage, int) or not 1 <= stage <= len(self.stages):
            raise UserError(f"stage must be 1..{len(self.stages)}, got {stage!r}")
        return self.stages[stage - 1].training_data()

    def __len__(self) -> int:
        return len(self.labels())

    def __repr__(self) -> str:
        ipcs = "+".join(str(s.ipc) for s in self.stages)
        return (f"DistilledSet({self.directory}: {self.dataset}, {self.method or 'unknown method'}, "
                f"{len(self.stages)} stage(s), IPC {ipcs}, {len(self)} training images of shape {self.image_shape})")


def load(directory: str | Path) -> DistilledSet:
    """Read the synthetic set in ``directory`` (``OUT/synthetic`` of a run, or a baseline's set).

    Here a set of 2 stages, each 2 images of every Fashion-MNIST class:

    >>> ds = pdd_ray.load(directory)
    >>> ds.dataset, ds.num_classes, len(ds.stages), ds.lrs
    ('fashion_mnist', 10, 2, [0.02, 0.03])
    >>> len(ds), ds.image_shape
    (40, (1, 28, 28))
    >>> ds.labels(1).tolist()[:4]
    [0, 0, 1, 1]
    """
    directory = Path(directory)
    return DistilledSet(synset_io.load(directory), directory)


@dataclass(frozen=True)
class Evaluated:
    """What ``evaluate`` measured, the protocol in words, and the recipe it used."""

    result: EvalResult
    protocol: str
    recipe: RecordedRecipe
    figures: dict = field(default_factory=dict)  # the asked-for extra figures, as in eval.json's "figures"

    mean = property(lambda self: self.result.mean, doc="Mean final test accuracy over runs (a fraction).")
    std = property(lambda self: self.result.std, doc="Population std of the final accuracy over runs.")


def evaluate(source: str | Path | DistilledSet, *, overrides: dict | None = None, data_root: str | None = None,
             device: str = "auto", progress: bool = False, figures=()) -> Evaluated:
    """Train fresh networks on a distilled set with its run's recorded recipe; test accuracy.

    ``overrides`` changes the recipe by dotted keys (``{"eval.runs": 3, "model.width": 64}``);
    ``data_root`` points at the dataset when it is not where the run read it. ``figures``: extra
    figures as ``pdd-ray evaluate --figures`` computes them (``random-real``, ``no-aug``,
    ``full-real``, ``dd-ranking``; see ``pdd_ray.jobs.evaluate``), in ``Evaluated.figures``.

    One short run of a narrow network (the recipe's defaults take far longer):

    >>> quick = {"eval.runs": 1, "eval.epochs": 1, "model.width": 8, "augment.dsa": False}
    >>> measured = pdd_ray.evaluate(directory, overrides=quick, data_root=fashion_root, device="cpu")
    >>> len(measured.result.per_run), 0.0 <= measured.mean <= 1.0
    (1, True)
    """
    ds = source if isinstance(source, DistilledSet) else load(source)
    expand_figures(figures)  # an unknown name fails before any training
    recipe = ds.recipe.with_overrides(overrides or {})
    protocol = recipe.protocol()
    run_device = resolve_device(device)
    test = load_test_split(ds.synset, data_root)
    make_model = model_factory(recipe.model, ds.image_shape, ds.num_classes, run_device)
    result = protocol.evaluate(ds.stages, test, make_model, progress=progress, device=run_device)
    text = protocol.describe(num_stages=len(ds.stages)) + "; test accuracy on the dataset's test split"
    extra = (extra_figures(ds.synset, test, recipe, result, figures, run_device, data_root, progress)
             if figures else {})
    return Evaluated(result, text, recipe, extra)
