"""An MTT sweep builds the stage-1 expert buffer once, before Tune, and every trial matches against it."""

import json
from pathlib import Path

import pytest

from pdd_ray.cli import main
from pdd_ray.trajectories import TrajectoryStore
from tests.distill.test_run_mtt import TINY as TINY_MTT


@pytest.mark.slow
def test_mtt_trials_share_one_stage_one_buffer(local_ray, write_sweep, tmp_path):
    overrides = ["method=mtt", *[o for o in TINY_MTT if not o.startswith("mtt.syn_steps")], "stages.num_stages=1"]
    path = write_sweep(grid={"mtt.syn_steps": [2, 3]}, overrides=overrides, cpus_per_trial=0.5)
    assert main(["sweep", "--config", str(path)]) == 0
    out = tmp_path / "sweep"
    shared = out / "experts" / "stage_1"
    store = TrajectoryStore.open(shared)
    assert store.completed() == [0, 1]
    built = {p.name: p.stat().st_mtime_ns for p in shared.iterdir()}
    rows = json.loads((out / "results.json").read_text())["trials"]
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    for row in rows:
        run = Path(row["run_dir"])
        manifest = json.loads((run / "synthetic" / "manifest.json").read_text())
        assert manifest["config"]["buffer"] == str(shared)  # matched against the shared buffer
        assert not (run / "experts").exists()  # and built no buffer of its own
    assert {r["params"]["mtt.syn_steps"] for r in rows} == {2, 3}
    # a second run of the same command finds everything done: the buffer is not rebuilt
    assert main(["sweep", "--config", str(path)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in shared.iterdir()} == built
