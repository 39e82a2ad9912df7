"""What a run reports as its stages go: tracker tags by global step, and one summary line per event."""

from __future__ import annotations

import json
import logging

from pdd_ray.distill.reporting import StageReporter
from pdd_ray.jobs.run import run_pdd
from pdd_ray.tracking import Tracker, tensorboard_dir
from tests.distill.test_driver import _config
from tests.test_tracking import images, read_events, scalars


class Recorder(Tracker):
    """A tracker that keeps every call."""

    def __init__(self):
        self.calls = []

    def log_scalars(self, values, step):
        self.calls.append(("scalars", step, dict(values)))

    def log_image(self, tag, path, step):
        self.calls.append(("image", step, tag))


def test_reporter_logs_steps_every_n_iterations_and_checks_always(caplog, tmp_path):
    recorder = Recorder()
    reporter = StageReporter(recorder, num_stages=2, iterations=4, every=3)
    hooks = reporter.hooks(1)  # stage 2: its global steps start after stage 1's 4 iterations
    with caplog.at_level(logging.INFO, logger="pdd_ray"):
        for it in range(1, 5):
            hooks.on_step(it, {"loss": 1.0 / it, "lr": 0.01, "skipped_nonfinite": 1 if it > 1 else 0})
        hooks.on_validation(4, 0.5)
        reporter.stage_done(1, {"val_accuracy": 0.5, "best_iteration": 4, "skipped_nonfinite": 1}, 0.01,
                            tmp_path / "stage_2.png")
    assert recorder.calls == [
        ("scalars", 7, {"stage_2/loss": 1 / 3, "stage_2/lr": 0.01, "stage_2/skipped_nonfinite": 1.0}),
        ("scalars", 8, {"stage_2/loss": 0.25, "stage_2/lr": 0.01, "stage_2/skipped_nonfinite": 1.0}),  # the last
        ("scalars", 8, {"stage_2/val_accuracy": 0.5}),
        ("scalars", 8, {"stage_2/best_val_accuracy": 0.5, "stage_2/best_iteration": 4}),
        ("image", 8, "stage_2/images")]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "stage 2/2, iteration 4/4: validation accuracy 50.00% (matching loss 0.25)"
    assert lines[1].startswith("stage 2/2 done: best validation accuracy 50.00% at iteration 4, learned lr 0.01, "
                               "1 skipped (non-finite) update(s)")


def test_the_callers_hooks_still_get_the_stage_index():
    seen = []
    hooks = StageReporter(None, 2, 4).hooks(1, on_iteration=lambda s, it: seen.append(("it", s, it)),
                                            on_validation=lambda s, it, acc: seen.append(("val", s, it, acc)))
    hooks.on_iteration(3)
    hooks.on_validation(4, 0.25)
    assert seen == [("it", 1, 3), ("val", 1, 4, 0.25)]


def test_a_tiny_run_writes_a_tensorboard_file_with_every_tag_and_each_stage_grid(tmp_path, tiny_fashion_root):
    out = tmp_path / "run"
    run_pdd(_config(tiny_fashion_root, out, "logging=[tensorboard]"), progress=False)
    events = read_events(tensorboard_dir(out))
    found = scalars(events)
    for k, first in ((1, 1), (2, 5)):  # 4 iterations a stage, one global step axis
        assert [step for step, _ in found[f"stage_{k}/loss"]] == list(range(first, first + 4))
        assert [step for step, _ in found[f"stage_{k}/val_accuracy"]] == [first - 1, first + 1, first + 3]
        assert [v for _, v in found[f"stage_{k}/skipped_nonfinite"]] == [0.0] * 4
        assert len(found[f"stage_{k}/best_val_accuracy"]) == 1
    assert "stage_1/lr" not in found  # gradient matching learns no lr
    assert set(images(events)) == {"stage_1/images", "stage_2/images"}
    assert json.loads((out / "metrics.json").read_text())["tracking"] == ["tensorboard"]
