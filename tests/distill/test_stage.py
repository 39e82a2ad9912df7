"""The stage loop with stand-in matchers: guards, best-iterate selection, checkpoint/resume."""

import math

import pytest
import torch

from pdd_ray.distill.base import Contribution, SyntheticState
from pdd_ray.distill.stage import StageSettings, distill_stage


class PullMatcher:
    """Pulls the images towards a target; grad_lr pushes the lr by ``lr_push``; optional NaN iterations."""

    def __init__(self, target, lr_push=0.0, nan_at=()):
        self.target, self.lr_push, self.nan_at = target, lr_push, set(nan_at)

    def plan(self, iteration, generator):
        return [(iteration, int(torch.randint(0, 1000, (1,), generator=generator)))]

    def contribution(self, state, item):
        iteration, noise_seed = item
        grad = state.images.detach() - self.target + 0.01 * torch.randn(
            state.images.shape, generator=torch.Generator().manual_seed(noise_seed))
        loss = float((grad ** 2).sum())
        if iteration in self.nan_at:
            loss, grad = math.nan, grad * math.nan
        return Contribution(loss, grad, torch.tensor(self.lr_push) if state.lr is not None else None)

    def after_iteration(self, state, iteration, generator):
        pass


def _state(lr=0.01):
    return SyntheticState(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long),
                          torch.zeros(2, 1, 2, 2).requires_grad_(True), torch.tensor([0, 1]),
                          torch.tensor(lr).requires_grad_(True) if lr is not None else None)


def _settings(**kw):
    base = dict(iterations=10, lr_img=0.1, lr_lr=0.01, eval_every=5, checkpoint_every=2, lr_min=1e-4, seed=0)
    return StageSettings(**{**base, **kw})


def _closeness(target):
    return lambda images, lr: -float((images - target).abs().sum())  # higher = closer = "more accurate"


def test_non_finite_iterations_are_skipped_and_counted(tmp_path):
    target = torch.ones(2, 1, 2, 2)
    state = _state()
    out = distill_stage(state, PullMatcher(target, nan_at={3, 4}), _settings(), _closeness(target),
                        tmp_path / "c.ckpt", progress=False)
    assert out.skipped_nonfinite == 2
    assert torch.isfinite(state.images).all() and torch.isfinite(out.images).all()
    assert out.best_iteration == 10 and (out.images - target).abs().max() < 0.5


def test_learned_lr_is_kept_positive(tmp_path):
    state = _state(lr=0.01)
    out = distill_stage(state, PullMatcher(torch.ones(2, 1, 2, 2), lr_push=10.0), _settings(),
                        _closeness(torch.ones(2, 1, 2, 2)), tmp_path / "c.ckpt", progress=False)
    assert float(state.lr.detach()) == pytest.approx(1e-4) and out.lr_clamped > 0 and out.lr > 0


def test_best_iterate_is_the_one_validation_prefers(tmp_path):
    target = torch.ones(2, 1, 2, 2)
    # validation prefers images near zero: the initial iterate (iteration 0) must win
    out = distill_stage(_state(), PullMatcher(target), _settings(), _closeness(torch.zeros(2, 1, 2, 2)),
                        tmp_path / "c.ckpt", progress=False)
    assert out.best_iteration == 0 and torch.equal(out.images, torch.zeros(2, 1, 2, 2))
    assert [h["iteration"] for h in out.history] == [0, 5, 10]


def test_killed_stage_resumes_to_the_same_result(tmp_path):
    target = torch.ones(2, 1, 2, 2)
    # lr_push < 0: the learned lr and its momentum move, so resuming must restore both
    straight = distill_stage(_state(), PullMatcher(target, lr_push=-0.5), _settings(), _closeness(target),
                             tmp_path / "a.ckpt", progress=False)
    assert straight.lr != pytest.approx(0.01)

    def kill(it):
        if it == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_stage(_state(), PullMatcher(target, lr_push=-0.5), _settings(), _closeness(target),
                      tmp_path / "b.ckpt", on_iteration=kill, progress=False)
    calls = []
    resumed = distill_stage(_state(), PullMatcher(target, lr_push=-0.5), _settings(), _closeness(target),
                            tmp_path / "b.ckpt", on_iteration=calls.append, progress=False)
    assert calls[0] == 7  # checkpoint at 6: at most checkpoint_every iterations redone
    assert torch.equal(resumed.images, straight.images) and resumed.lr == straight.lr
    assert resumed.history == straight.history


def test_checkpoint_of_another_config_is_refused(tmp_path):
    from pdd_ray.errors import UserError
    target = torch.ones(2, 1, 2, 2)
    distill_stage(_state(), PullMatcher(target), _settings(iterations=2), _closeness(target), tmp_path / "c.ckpt",
                  progress=False, fingerprint="config-a")
    with pytest.raises(UserError, match="different config"):
        distill_stage(_state(), PullMatcher(target), _settings(iterations=4), _closeness(target),
                      tmp_path / "c.ckpt", progress=False, fingerprint="config-b")


class SlowCheck:
    """A deferred check that is ready only after a few polls (as a Ray task finishing later)."""

    def __init__(self, value, polls):
        self.value, self.polls = value, polls

    def ready(self):
        self.polls -= 1
        return self.polls < 0

    def result(self):
        return self.value


class DeferredValidator:
    deferred = True

    def __init__(self, score, polls=4):
        self.score, self.polls, self.submitted = score, polls, []

    def __call__(self, images, lr):
        return self.score(images, lr)

    def submit(self, images, lr):
        self.submitted.append(images.clone())
        return SlowCheck(self.score(images, lr), self.polls)


def test_deferred_checks_give_the_in_process_outcome(tmp_path):
    target = torch.ones(2, 1, 2, 2)
    here = distill_stage(_state(), PullMatcher(target, lr_push=-0.5), _settings(eval_every=2), _closeness(target),
                         tmp_path / "a.ckpt", progress=False)
    seen = []
    deferred = DeferredValidator(_closeness(target))
    later = distill_stage(_state(), PullMatcher(target, lr_push=-0.5), _settings(eval_every=2), deferred,
                          tmp_path / "b.ckpt", progress=False, on_validation=lambda it, acc: seen.append(it))
    assert len(deferred.submitted) == 6 and seen == [0, 2, 4, 6, 8, 10]
    assert later.history == here.history and later.best_iteration == here.best_iteration
    assert torch.equal(later.images, here.images)


def test_checks_pending_at_a_kill_are_scored_after_resume(tmp_path):
    target = torch.ones(2, 1, 2, 2)
    # a validation that prefers an early iterate, so losing a pending check would change the outcome
    score = _closeness(torch.full((2, 1, 2, 2), 0.3))
    here = distill_stage(_state(), PullMatcher(target), _settings(eval_every=2, checkpoint_every=3), score,
                         tmp_path / "a.ckpt", progress=False)

    def kill(it):
        if it == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_stage(_state(), PullMatcher(target), _settings(eval_every=2, checkpoint_every=3),
                      DeferredValidator(score, polls=100), tmp_path / "b.ckpt", on_iteration=kill, progress=False)
    resumed_validator = DeferredValidator(score, polls=100)
    resumed = distill_stage(_state(), PullMatcher(target), _settings(eval_every=2, checkpoint_every=3),
                            resumed_validator, tmp_path / "b.ckpt", progress=False)
    assert resumed.history == here.history and resumed.best_iteration == here.best_iteration
    assert torch.equal(resumed.images, here.images)
    assert len(resumed_validator.submitted) >= 3 + 2  # checks 0, 2, 4 pending at the checkpoint of 6, then 8, 10
