"""Progress output: a bar on a terminal, a few whole lines elsewhere; --quiet / --log-level."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest
import yaml

from pdd_ray.config import parse_override, set_dotted
from pdd_ray.errors import UserError
from pdd_ray.progress import (INTERVAL_ENV, LOG_LEVEL_ENV, PROGRESS_ENV, LineProgress, configure_output, progress_bar,
                              progress_mode, summary)
from tests.distill.test_driver import TINY


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def default_environment(monkeypatch):
    for name in (PROGRESS_ENV, INTERVAL_ENV, LOG_LEVEL_ENV):
        monkeypatch.setenv(name, "")  # so that what configure_output sets is undone after the test
        monkeypatch.delenv(name)


def test_a_file_gets_lines_and_a_terminal_gets_a_bar():
    assert progress_mode(io.StringIO()) == "lines"
    assert progress_mode(Terminal()) == "bar"
    assert isinstance(progress_bar(total=3, stream=io.StringIO()), LineProgress)
    assert not isinstance(progress_bar(total=3, stream=Terminal()), LineProgress)


def test_the_environment_overrides_the_choice(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    assert progress_mode(Terminal()) == "lines"
    monkeypatch.setenv(PROGRESS_ENV, "off")
    out = io.StringIO()
    bar = progress_bar(total=3, stream=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


def test_lines_come_at_most_once_per_interval_then_one_final_line():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress(total=1000, desc="stage 1/2", unit="it", stream=out, interval=30, clock=clock)
    for _ in range(1000):
        clock.now += 0.1  # 100 s in all: lines at 30, 60, 90 s
        bar.set_postfix(loss="0.5000")
        bar.update(1)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("stage 1/2: 1000/1000 it (100%)") and lines[-1].endswith("loss=0.5000")


def test_a_count_set_directly_is_shown_on_refresh():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress(total=10, desc="experts 0/2", unit="epoch", stream=out, interval=30, clock=clock)
    bar.n = 4
    bar.refresh()  # too soon: nothing
    clock.now = 31
    bar.refresh()
    assert out.getvalue().startswith("experts 0/2: 4/10 epoch (40%)")


def test_short_nested_work_left_out_stays_silent():
    clock, out = FakeClock(), io.StringIO()
    with LineProgress(total=5, stream=out, leave=False, clock=clock) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_iterating_counts_every_item():
    out = io.StringIO()
    seen = list(progress_bar(range(4), desc="runs", unit="run", stream=out))
    assert seen == [0, 1, 2, 3]
    assert out.getvalue().strip().startswith("runs: 4/4 run (100%)")


def test_configure_output_sets_the_level_and_quiet_turns_progress_off(monkeypatch, capsys):
    logger = logging.getLogger("pdd_ray")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    configure_output(quiet=False, level="info")
    summary("stage 1/1 done")
    assert capsys.readouterr().err == "stage 1/1 done\n"
    configure_output(quiet=True, level="info")
    summary("hidden")
    assert capsys.readouterr().err == ""
    assert progress_mode(Terminal()) == "off"
    assert len(logger.handlers) == 1  # configured twice, one handler


def test_a_bad_level_or_environment_value_is_one_line(monkeypatch):
    with pytest.raises(UserError, match="--log-level must be one of"):
        configure_output(level="loud")
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(UserError, match=PROGRESS_ENV):
        configure_output()


@pytest.mark.slow
def test_a_cli_run_logged_to_a_file_has_whole_lines_only(tmp_path, tiny_fashion_root):
    data: dict = {}
    for item in [*TINY, f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}"]:
        set_dotted(data, *parse_override(item))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k not in (PROGRESS_ENV, INTERVAL_ENV)}
    log = tmp_path / "job.log"
    with open(log, "w") as handle:  # what a Ray job log or CI sees: not a terminal
        done = subprocess.run([sys.executable, "-m", "pdd_ray", "run", "--config", str(config)], stdout=handle,
                              stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) <= 40 and max(len(line) for line in lines) < 300, text
    assert any(line.startswith("stage 2/2: 4/4 it (100%)") for line in lines), text


def test_task_counters_count_what_ray_tasks_add_each_on_its_own_and_share_one_actor(local_ray):
    import ray
    from pdd_ray.progress import task_counter
    first, second = task_counter(), task_counter()
    assert first.actor._actor_id == second.actor._actor_id  # one actor process per session, not one per build
    add = ray.remote(lambda counter, n: counter.add(n)).options(num_cpus=0)  # shipped by value: a light worker
    ray.get([add.remote(first, 2), add.remote(first, 3), add.remote(second, 1)])
    assert (first.value(), second.value()) == (5, 1)
    first.close()
    assert first.value() == 0 and second.value() == 1
    ray.kill(second.actor)
    assert second.value() == 1  # progress is cosmetic: a lost counts actor does not fail the job
