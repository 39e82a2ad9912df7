import pytest
import torch

from pdd_ray.data.splits import RawSplit, split_validation


def test_validation_split_is_seeded_stratified_and_disjoint():
    labels = torch.arange(10).repeat(50)
    train, val = split_validation(labels, 100, seed=3)
    assert len(train) + len(val) == 500 and len(set(train.tolist()) & set(val.tolist())) == 0
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10
    train2, val2 = split_validation(labels, 100, seed=3)
    assert torch.equal(val, val2) and torch.equal(train, train2)
    assert not torch.equal(split_validation(labels, 100, seed=4)[1], val)


def test_validation_size_is_checked():
    with pytest.raises(ValueError):
        split_validation(torch.zeros(5, dtype=torch.long), 5, seed=0)
    assert len(split_validation(torch.zeros(5, dtype=torch.long), 0, seed=0)[1]) == 0


def test_per_class_sampling(tiny_labeled):
    gen = torch.Generator().manual_seed(0)
    idx = tiny_labeled.sample_indices(2, 4, gen)
    assert len(set(idx.tolist())) == 4 and (tiny_labeled.labels[idx] == 2).all()
    assert tiny_labeled.sample(1, 100).shape[0] == 10  # never more than the class holds
    sub = tiny_labeled.subset(torch.tensor([0, 15, 39]))
    assert sub.labels.tolist() == [0, 1, 3] and sub.indices_of(1).tolist() == [1]


def test_raw_split_validates_dtype():
    with pytest.raises(ValueError):
        RawSplit(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ("a",))
    raw = RawSplit(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ("a",))
    assert torch.equal(raw.to_float(), torch.ones(2, 1, 2, 2))
