"""``pdd-ray continual``: the recipe through the CLI, a table of the incremental metrics, a resuming rerun."""

import pytest

from pdd_ray.cli import main
from tests.continual.test_recipe_run import RECIPE, TINY_MTT


def test_the_cli_runs_prints_the_metrics_and_resumes(tiny_fashion_root, tmp_path, capsys, local_ray):
    argv = ["continual", "--config", str(RECIPE), f"data.root={tiny_fashion_root}", f"out={tmp_path / 'run'}",
            *TINY_MTT]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "average incremental %" in first and "herding" in first and (tmp_path / "run" / "continual.json").is_file()
    assert main(argv) == 0  # finished phases are read back, the same table comes out
    assert capsys.readouterr().out.splitlines()[-5:] == first.splitlines()[-5:]


def test_the_cli_needs_a_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["continual"])
    assert exc.value.code == 2
    assert "--config" in capsys.readouterr().err
