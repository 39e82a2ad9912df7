import math

import pytest
import torch

from pdd_ray.errors import UserError
from pdd_ray.selection import ForgettingTracker, load_scores, save_scores


def _logits(correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.zeros(len(correct), dtype=torch.long)
    logits = torch.tensor([[1.0, 0.0] if c else [0.0, 1.0] for c in correct])
    return logits, labels


def test_counts_correct_to_wrong_flips_only():
    tracker = ForgettingTracker(3)
    history = [[True, False, False], [False, True, False], [True, True, False], [False, False, False]]
    for step in history:
        tracker(torch.tensor([0, 1, 2]), *_logits(step))
    scores = tracker.scores()
    assert scores[0].item() == 2  # T F T F: two forgetting events
    assert scores[1].item() == 1  # F T T F: one
    assert math.isinf(scores[2].item())  # never learned


def test_only_seen_examples_are_updated():
    tracker = ForgettingTracker(4)
    tracker(torch.tensor([1]), *_logits([True]))
    tracker(torch.tensor([1]), *_logits([False]))
    assert tracker.flips.tolist() == [0, 1, 0, 0]


def test_scores_round_trip(tmp_path):
    scores, idx = torch.tensor([1.0, float("inf"), 0.0]), torch.tensor([10, 4, 7])
    path = save_scores(tmp_path / "f.safetensors", scores, idx)
    s2, i2 = load_scores(path)
    assert torch.equal(s2, scores) and torch.equal(i2, idx)
    with pytest.raises(UserError):
        load_scores(tmp_path / "none.safetensors")
