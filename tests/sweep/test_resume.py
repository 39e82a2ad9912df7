"""A sweep killed mid-way (SIGKILL to its process group) resumes with the same command; finished trials stay."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sweep.conftest import GRID_2X2

REPO = Path(__file__).resolve().parents[2]


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in directory.rglob("*") if p.is_file()}


def _wait_for_a_finished_trial(out: Path, proc: subprocess.Popen, timeout: float) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p.parent for p in out.glob("trials/*/sweep_result.json")]
        if done:
            return done
        assert proc.poll() is None, "the sweep ended before any trial finished"
        time.sleep(0.2)
    raise AssertionError("no trial finished in time")


@pytest.mark.slow
def test_killed_sweep_resumes_and_never_reruns_finished_trials(local_ray, write_sweep, tmp_path):
    path = write_sweep(grid=GRID_2X2, max_concurrent_trials=2)
    out = tmp_path / "sweep"
    # The sweep driver runs in its own process group on the test's Ray (RAY_ADDRESS, as on a cluster);
    # killing the driver ends its Tune trials with it.
    env = {**os.environ, "RAY_ADDRESS": local_ray}
    command = [sys.executable, "-m", "pdd_ray", "sweep", "--config", str(path)]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            finished = _wait_for_a_finished_trial(out, proc, timeout=240)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = {d.name: _files(d) for d in finished}
    assert len(list(out.glob("trials/*/sweep_result.json"))) < 4, "every trial finished before the kill"

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming the sweep" in again.stdout
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    for name, files in before.items():  # not one file of a finished trial was rewritten
        assert _files(out / "trials" / name) == files, name
