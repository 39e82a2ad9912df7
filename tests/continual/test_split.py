"""The class split: phases disjoint and covering, seeded or given; a phase's bundle holds its classes only."""

import pytest
import torch

from pdd_ray.continual.config import PhasesConfig
from pdd_ray.continual.split import PhaseSplit, phase_bundle
from pdd_ray.data.bundle import create_dataset
from pdd_ray.data.splits import LabeledImages
from pdd_ray.errors import UserError


@pytest.mark.parametrize("classes,phases", [(10, 5), (100, 5), (100, 10), (6, 1)])
def test_phases_are_disjoint_and_cover_every_class(classes, phases):
    split = PhaseSplit.of(PhasesConfig(num_phases=phases), classes, seed=3)
    flat = [c for p in split.phases for c in p]
    assert sorted(flat) == list(range(classes))  # covers, and no class twice
    assert all(len(p) == classes // phases for p in split.phases)
    assert list(split.order) == flat
    for t in range(phases):
        assert split.seen(t) == tuple(flat[: (t + 1) * (classes // phases)])
        assert split.offset(t) == t * (classes // phases)


def test_the_order_is_a_seeded_permutation_or_the_given_list():
    a, b = (PhaseSplit.of(PhasesConfig(num_phases=5), 10, seed=s) for s in (0, 0))
    assert a == b
    assert PhaseSplit.of(PhasesConfig(num_phases=5), 10, seed=1).order != a.order
    assert PhaseSplit.of(PhasesConfig(num_phases=5, order_seed=1), 10, seed=0).order == \
        PhaseSplit.of(PhasesConfig(num_phases=5), 10, seed=1).order
    given = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert PhaseSplit.of(PhasesConfig(num_phases=2, class_order=given), 10, seed=0).phases == \
        ((9, 8, 7, 6, 5), (4, 3, 2, 1, 0))


@pytest.mark.parametrize("config,message", [
    (PhasesConfig(num_phases=3), "does not divide"),
    (PhasesConfig(num_phases=2, class_order=[0, 1, 2, 3, 4, 5, 6, 7, 8, 10]), "exactly once"),
    (PhasesConfig(num_phases=2, class_order=[0, 1, 2, 3]), "exactly once")])
def test_a_bad_split_is_one_user_error(config, message):
    with pytest.raises(UserError, match=message):
        PhaseSplit.of(config, 10, seed=0)


def _rows(split: LabeledImages) -> set[bytes]:
    return {x.numpy().tobytes() for x in split.images}


def test_a_phase_bundle_holds_exactly_its_classes_images_relabelled_in_phase_order(tiny_fashion_root):
    from pdd_ray.config import DataConfig
    data = create_dataset(DataConfig(root=str(tiny_fashion_root), val_size=40))
    classes = (7, 2)
    bundle = phase_bundle(data, classes)
    assert bundle.num_classes == 2 and bundle.class_names == (data.class_names[7], data.class_names[2])
    for name in ("train", "val", "test"):
        full, part = getattr(data, name), getattr(bundle, name)
        for local, c in enumerate(classes):  # the same images, in order, labelled by position in the phase
            assert torch.equal(part.images[part.labels == local], full.images[full.labels == c])
        assert len(part) == int(sum((full.labels == c).sum() for c in classes))
        others = _rows(full.subset(torch.nonzero((full.labels != 7) & (full.labels != 2)).flatten()))
        assert not _rows(part) & others
    assert torch.equal(bundle.train_indices, data.train_indices[(data.train.labels == 7) | (data.train.labels == 2)])
