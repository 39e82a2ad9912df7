"""One trial without Tune: intermediate reports on the step clock, the final validation score, reuse."""

import json
import math
from pathlib import Path

import pytest

from pdd_ray.sweep import load_sweep_config, make_plan
from pdd_ray.sweep.space import trial_name
from pdd_ray.sweep.trial import RESULT_FILE, TRIAL_FILE, distil_and_score, final_report, run_trial, stored_result

PARAMS = {"stages.num_stages": 2, "stages.ipc": 1}


@pytest.fixture
def plan(write_sweep):
    return make_plan(load_sweep_config(write_sweep(grid={"stages.num_stages": [2], "stages.ipc": [1]})))


def test_reports_every_validation_check_then_scores_the_final_set_on_validation(plan):
    config = plan.trial_config(PARAMS)
    run_dir = Path(config.out)
    reports = []
    result = distil_and_score(config, PARAMS, reports.append)
    # 4 iterations, a check every 2: iterations 0, 2, 4 in each of the 2 stages, one step each
    assert [(r["stage"], r["iteration"], r["step"]) for r in reports] == \
        [(1, 0, 1), (1, 2, 2), (1, 4, 3), (2, 0, 4), (2, 2, 5), (2, 4, 6)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["test_accuracy"] == metrics["pdd"]["mean"]  # run_pdd's test number, reported as is
    # scored on the validation split: 40 images, so a multiple of 1/40 (the test split has 100)
    assert math.isclose(result["val_accuracy"] * 40, round(result["val_accuracy"] * 40), abs_tol=1e-6)
    assert (result["num_stages"], result["ipc"], result["total_ipc"]) == (2, 1, 2)
    assert "validation split" in result["protocol"]
    # conftest: eval.epochs 2 under the official schedule -> 3 epochs a phase, 2 progressive phases
    assert "3 epochs per phase" in result["protocol"] and result["epochs_per_net"] == 6
    final = final_report(result, config)
    assert final["step"] == 7 and final["final"] == 1 and final["val_accuracy"] == result["val_accuracy"]
    assert stored_result(run_dir, PARAMS) == result
    assert stored_result(run_dir, {**PARAMS, "seed": 1}) is None  # a result for other params is not reused


def test_a_finished_trial_started_again_reports_its_stored_result_without_recomputing(plan, monkeypatch):
    import ray.tune

    import pdd_ray.jobs.run

    reports = []
    monkeypatch.setattr(ray.tune, "report", reports.append)
    run_trial(PARAMS, plan)
    run_dir = Path(plan.trial_config(PARAMS).out)
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert reports[-1]["final"] == 1 and len(reports) == 7
    assert json.loads((run_dir / TRIAL_FILE).read_text())["trial"] == trial_name(PARAMS) == run_dir.name

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a finished trial")

    monkeypatch.setattr(pdd_ray.jobs.run, "run_pdd", forbidden)
    run_trial(PARAMS, plan)
    assert len(reports) == 8 and reports[-1] == reports[6]  # only the final report, same numbers
    assert {p: p.stat().st_mtime_ns for p in files} == files and (run_dir / RESULT_FILE).is_file()
