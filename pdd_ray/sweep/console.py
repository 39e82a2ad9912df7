"""What a sweep prints while Tune runs: one line per finished or failed trial (Tune's tables are off)."""

from __future__ import annotations

from ray.tune import Callback

from pdd_ray.sweep.space import trial_name


class TrialLines(Callback):
    """Prints one line when a trial finishes (its validation and test accuracy) or fails."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Tune hook: a trial ended (finished, or stopped early by ASHA)."""
        r = trial.last_result or {}
        if r.get("final"):
            test = f", test {100 * r['test_accuracy']:.2f}%" if r.get("test_accuracy") is not None else ""
            text = f"val {100 * r['val_accuracy']:.2f}%{test}"
        else:
            text = f"stopped early at step {r.get('step')} (val {100 * r.get('val_accuracy', 0):.2f}%)"
        print(f"trial {trial_name(trial.config)}: {text}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Tune hook: a trial raised."""
        print(f"trial {trial_name(trial.config)}: failed (see the table at the end)", flush=True)
