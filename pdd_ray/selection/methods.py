"""The selectors. Each takes the training split, ``ipc`` and a context, and returns indices into the split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pdd_ray.data.splits import LabeledImages
from pdd_ray.registry import Registry
from pdd_ray.selection.forgetting import ForgettingTracker
from pdd_ray.train.loop import make_sgd, train_epoch

SELECTORS: Registry = Registry("selection method")


@dataclass
class SelectionContext:
    """What selectors may need: a seed, and a way to get a network trained on the real data.

    The scoring network is trained at most once per context and shared:
    herding and k-center use its features, forgetting uses the flips counted
    while it trained.
    """

    make_model: Callable[[], nn.Module]
    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 256
    augment: object = None
    seed: int = 0
    device: torch.device = torch.device("cpu")
    _trained: tuple | None = field(default=None, repr=False)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator from the context seed."""
        return torch.Generator().manual_seed(self.seed)

    def scorer(self, train: LabeledImages) -> tuple[nn.Module, torch.Tensor]:
        """(network trained on ``train``, forgetting scores per example), computed once."""
        if self._trained is None:
            torch.manual_seed(self.seed)
            model = self.make_model().to(self.device)
            optimizer = make_sgd(model, self.lr, momentum=0.9, weight_decay=5e-4)
            tracker = ForgettingTracker(len(train))
            generator = self.generator()
            for _ in range(self.epochs):
                train_epoch(model, train.images, train.labels, optimizer, self.batch_size,
                            self.augment, generator, on_batch=tracker)
            self._trained = (model.eval(), tracker.scores())
        return self._trained


def select(method: str, train: LabeledImages, ipc: int, context: SelectionContext) -> torch.Tensor:
    """Indices (into ``train``) of ``ipc`` examples per class chosen by ``method``."""
    return SELECTORS.get(method)(train, ipc, context)


@SELECTORS.register("random")
def select_random(train: LabeledImages, ipc: int, context: SelectionContext) -> torch.Tensor:
    """``ipc`` uniformly random examples of each class."""
    gen = context.generator()
    return torch.cat([train.sample_indices(c, ipc, gen) for c in range(train.num_classes)])


@torch.no_grad()
def _embeddings(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model.embed(x.to(device)).cpu() for x in images.split(batch_size)])


def _per_class(train: LabeledImages, context: SelectionContext, pick: Callable[[torch.Tensor], torch.Tensor]):
    model, _ = context.scorer(train)
    chosen = []
    for c in range(train.num_classes):
        idx = train.indices_of(c)
        chosen.append(idx[pick(_embeddings(model, train.images[idx]))])
    return torch.cat(chosen)


def herding_order(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy herding: each pick keeps the running mean of the chosen closest to the class mean."""
    k = min(k, len(features))
    target = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool)
    for step in range(1, k + 1):
        candidate_means = (running + features) / step
        dist = (candidate_means - target).norm(dim=1)
        dist[~available] = float("inf")
        best = int(dist.argmin())
        chosen.append(best)
        available[best] = False
        running += features[best]
    return torch.tensor(chosen, dtype=torch.long)


def k_center_order(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center: start at the example nearest the class mean, then repeatedly take the farthest."""
    k = min(k, len(features))
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    min_dist = (features - features[first]).norm(dim=1)
    for _ in range(k - 1):
        nxt = int(min_dist.argmax())
        chosen.append(nxt)
        min_dist = torch.minimum(min_dist, (features - features[nxt]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


@SELECTORS.register("herding")
def select_herding(train: LabeledImages, ipc: int, context: SelectionContext) -> torch.Tensor:
    """Herding in the scoring network's feature space."""
    return _per_class(train, context, lambda f: herding_order(f, ipc))


@SELECTORS.register("k-center")
def select_k_center(train: LabeledImages, ipc: int, context: SelectionContext) -> torch.Tensor:
    """Greedy k-center in the scoring network's feature space."""
    return _per_class(train, context, lambda f: k_center_order(f, ipc))


@SELECTORS.register("forgetting")
def select_forgetting(train: LabeledImages, ipc: int, context: SelectionContext) -> torch.Tensor:
    """The ``ipc`` most-forgotten examples of each class (ties broken by the seed)."""
    _, scores = context.scorer(train)
    gen = context.generator()
    chosen = []
    for c in range(train.num_classes):
        idx = train.indices_of(c)
        shuffled = idx[torch.randperm(len(idx), generator=gen)]  # random tie-break, then stable sort
        order = torch.sort(scores[shuffled], descending=True, stable=True).indices
        chosen.append(shuffled[order[:ipc]])
    return torch.cat(chosen)
