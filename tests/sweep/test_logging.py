"""A sweep's ``logging``: checked with the config, Tune's matching logger callbacks, the same trials."""

from __future__ import annotations

import pytest

from pdd_ray.errors import UserError
from pdd_ray.sweep import load_sweep_config, make_plan


def test_an_unknown_backend_is_refused_with_the_config(write_sweep):
    with pytest.raises(UserError, match="did you mean 'wandb'"):
        load_sweep_config(write_sweep(logging=["wandbb"]))


def test_logging_does_not_change_which_trials_a_sweep_runs(write_sweep, tiny_base):
    plain = make_plan(load_sweep_config(write_sweep()))
    assert make_plan(load_sweep_config(write_sweep(logging=["tensorboard"]))).fingerprint() == plain.fingerprint()
    tiny_base.write_text(tiny_base.read_text() + "logging: [tensorboard]\n")  # each trial's own trackers
    watched = make_plan(load_sweep_config(write_sweep()))
    assert watched.fingerprint() == plain.fingerprint()  # a sweep resumes with trackers added
    assert watched.trial_config({}).logging == ["tensorboard"]


def test_the_tuner_gets_the_matching_logger_callbacks(write_sweep):
    from ray.tune.logger import TBXLoggerCallback

    from pdd_ray.sweep.console import TrialLines
    from pdd_ray.sweep.tuner import run_config

    plain = run_config(make_plan(load_sweep_config(write_sweep())))
    assert [type(c) for c in plain.callbacks] == [TrialLines]
    watched = run_config(make_plan(load_sweep_config(write_sweep(logging=["tensorboard"]))))
    assert [type(c) for c in watched.callbacks] == [TrialLines, TBXLoggerCallback]
