"""A tiny 2x2 sweep end to end on a local Ray: Tune trials, results.csv/json, heatmap, table, --report."""

import csv
import json
from pathlib import Path

import pytest

from pdd_ray.cli import main
from pdd_ray.errors import UserError
from pdd_ray.sweep import load_sweep_config
from pdd_ray.sweep.space import trial_name
from pdd_ray.sweep.tuner import record_sweep, trial_resources
from tests.sweep.conftest import GRID_2X2


def _tune_final_reports(sweep_dir: Path) -> dict[str, dict]:
    """The last result each Tune trial reported, keyed by our trial name (read from Tune's own files)."""
    finals = {}
    for path in (sweep_dir / "tune").glob("*/result.json"):
        last = json.loads(path.read_text().strip().splitlines()[-1])
        finals[trial_name(last["config"])] = last
    return finals


@pytest.mark.slow
def test_two_by_two_sweep_writes_rows_heatmap_and_the_reported_numbers(local_ray, write_sweep, tmp_path, capsys):
    path = write_sweep(grid=GRID_2X2, cpus_per_trial=0.5)  # four tiny trials at once on two cores
    assert main(["sweep", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "sweep"
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((int(r["num_stages"]), int(r["ipc"])) for r in rows) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["status"] == "done" and int(r["total_ipc"]) == int(r["num_stages"]) * int(r["ipc"]) for r in rows)
    finals = _tune_final_reports(out)
    assert set(finals) == {r["trial"] for r in rows}
    for r in rows:  # the table holds exactly what each trial reported to Tune at its end
        reported = finals[r["trial"]]
        assert reported["final"] == 1
        assert float(r["val_accuracy"]) == reported["val_accuracy"]
        assert float(r["test_accuracy"]) == reported["test_accuracy"]
        assert Path(r["run_dir"]).name == r["trial"] and (Path(r["run_dir"]) / "synthetic" / "manifest.json").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["trials"]) == 4 and saved["sweep"]["grid"] == GRID_2X2
    assert saved["versions"]["ray"] and "validation split" in saved["protocol"] and saved["created"]
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert saved["best"] == best["trial"] and f"best by validation: {best['trial']}" in printed
    png = (out / "heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    table = [line.split() for line in printed.splitlines() if line.rstrip().endswith(("done", "(val)"))]
    assert len(table) == 4 and {f"{100 * float(r['val_accuracy']):.2f}" for r in rows} == {t[3] for t in table}

    # the table and files can be rebuilt from the directory alone, without Ray or Tune
    (out / "results.csv").unlink()
    (out / "heatmap.png").unlink()
    assert main(["sweep", "--report", str(out)]) == 0
    assert (out / "heatmap.png").is_file() and len((out / "results.csv").read_text().splitlines()) == 5
    assert capsys.readouterr().out.count("done") == 4


@pytest.mark.slow
def test_a_failing_trial_is_an_error_row_and_a_non_zero_exit(local_ray, write_sweep, tmp_path, capsys):
    path = write_sweep(overrides=[f"data.root={tmp_path / 'no_data_here'}"], grid={"stages.num_stages": [1]})
    assert main(["sweep", "--config", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "failed: " in printed and "data not found" in printed and "run the same command again" in printed
    with open(tmp_path / "sweep" / "results.csv") as handle:
        assert [r["status"] for r in csv.DictReader(handle)] == ["error"]


def test_a_changed_sweep_is_not_mixed_into_an_existing_directory(write_sweep):
    from pdd_ray.sweep import make_plan
    record_sweep(make_plan(load_sweep_config(write_sweep(grid=GRID_2X2))))
    record_sweep(make_plan(load_sweep_config(write_sweep(grid=GRID_2X2, address="local"))))  # same trials
    with pytest.raises(UserError, match="different sweep"):
        record_sweep(make_plan(load_sweep_config(write_sweep(grid={"stages.ipc": [1, 3]}))))


def test_trials_get_fractional_gpus_and_mtt_trials_a_bundle_for_transition_experts(write_sweep):
    from pdd_ray.sweep import make_plan
    plain = make_plan(load_sweep_config(write_sweep(gpus_per_trial=0.25, cpus_per_trial=2)))
    assert trial_resources(plain).bundles == [{"CPU": 2.0, "GPU": 0.25}]
    mtt = make_plan(load_sweep_config(write_sweep(overrides=["method=mtt", "experts.cpus_per_expert=0.5",
                                                              "experts.num_experts=3"])))
    # one bundle per transition expert, so a trial's experts train at once
    assert trial_resources(mtt).bundles == [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]


def _mtt_plan(write_sweep, **fields):
    from pdd_ray.sweep import make_plan
    return make_plan(load_sweep_config(write_sweep(overrides=["method=mtt", "experts.num_experts=6",
                                                              "experts.gpus_per_expert=0.25", "device=cuda"],
                                                   gpus_per_trial=0.5, **fields)))


def test_expert_bundles_are_cut_to_what_fits_beside_a_trial(write_sweep):
    from pdd_ray.sweep.tuner import check_cluster_fits
    plan = _mtt_plan(write_sweep)
    check_cluster_fits(plan, have={"CPU": 4.0, "GPU": 1.0})  # 3 CPUs and 0.5 GPU left: 2 experts of 0.25 GPU
    assert trial_resources(plan).bundles == [{"CPU": 1.0, "GPU": 0.5}] + [{"CPU": 1.0, "GPU": 0.25}] * 2
    roomy = _mtt_plan(write_sweep)
    check_cluster_fits(roomy, have={"CPU": 16.0, "GPU": 8.0})
    assert len(trial_resources(roomy).bundles) == 1 + 6  # never more than the trial's experts
    shared = _mtt_plan(write_sweep, max_concurrent_trials=2)
    check_cluster_fits(shared, have={"CPU": 16.0, "GPU": 2.0})  # each of 2 trials: 8 CPUs, 1 GPU
    assert len(trial_resources(shared).bundles) == 1 + 2


def test_experts_per_trial_is_taken_as_given_and_must_fit(write_sweep):
    from pdd_ray.sweep.tuner import check_cluster_fits
    plan = _mtt_plan(write_sweep, experts_per_trial=4)
    assert len(trial_resources(plan).bundles) == 5
    with pytest.raises(UserError, match="4 transition expert"):
        check_cluster_fits(plan, have={"CPU": 4.0, "GPU": 1.0})
    with pytest.raises(UserError, match="experts_per_trial must be >= 1"):
        load_sweep_config(write_sweep(experts_per_trial=0))
