"""Forgetting curriculum: stage i distils the scores in [w(i-1), w·i), lowest first."""

import torch

from pdd_ray.distill.init import forgetting_partition

SCORES = torch.tensor([0., 3., 9.99, 10., 15., 19., 20., 25., 31., 0.5, 12., 22.])
LABELS = torch.tensor([0] * 9 + [1] * 3)


def test_each_stage_takes_its_own_bin_lowest_first():
    bins = [forgetting_partition(SCORES, i, 10.0, LABELS, keep_at_least=1).tolist() for i in range(3)]
    assert bins[0] == [0, 1, 2, 9]  # [0, 10): the easy examples first
    assert bins[1] == [3, 4, 5, 10]  # [10, 20): the upper edge belongs to the next bin
    assert bins[2] == [6, 7, 11]  # [20, 30): 31 is not in it
    assert not set(bins[0]) & set(bins[1]) and not set(bins[1]) & set(bins[2])


def test_a_class_short_of_examples_keeps_the_ones_nearest_its_bin():
    # stage 4 is [30, 40): class 0 has one example there (31), class 1 none; both must keep two
    kept = forgetting_partition(SCORES, 3, 10.0, LABELS, keep_at_least=2).tolist()
    assert kept == [7, 8, 10, 11]  # class 0: 31 then 25; class 1: 22 then 12
