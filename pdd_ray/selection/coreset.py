"""A coreset as a synthetic-set stage: the chosen real images of a split, scored as a ``SelectionConfig`` says."""

from __future__ import annotations

import torch

from pdd_ray.augment import make_augment
from pdd_ray.data.splits import LabeledImages
from pdd_ray.models import model_factory
from pdd_ray.selection.methods import SelectionContext, select


def coreset_stage(train: LabeledImages, selection, model, augment, seed: int, device: torch.device):
    """(stage of ``selection.ipc`` images per class chosen by ``selection.method``, the selection context).

    ``selection`` / ``model`` / ``augment``: a run config's ``SelectionConfig``, ``ModelConfig`` and
    ``AugmentConfig``; the scoring network is ``model`` at ``selection.width``. The context keeps that
    network and its forgetting counts (``context.scorer``) for whoever wants them afterwards.
    """
    from pdd_ray import synset as synset_io
    shape = tuple(train.images.shape[1:])
    context = SelectionContext(
        make_model=model_factory(model, shape, train.num_classes, device, width=selection.width),
        epochs=selection.epochs, lr=selection.lr, batch_size=selection.batch_size, augment=make_augment(augment),
        seed=seed, device=device)
    chosen = select(selection.method, train, selection.ipc, context)
    stage = synset_io.Stage(train.images[chosen], train.labels[chosen], lr=None,
                            info={"source": f"coreset:{selection.method}"})
    return stage, context


__all__ = ["coreset_stage"]
