import json
import subprocess
import sys

import pytest

from pdd_ray.cli import main

TINY = ["model.width=8", "selection.width=8", "eval.runs=1", "eval.epochs=2", "data.val_size=40"]


@pytest.mark.parametrize("argv,fragment", [
    (["baseline", "--ipc", "-3"], "selection.ipc must be >= 1"),
    (["baseline", "--dataset", "mnist-ish"], "unknown dataset"),
    (["baseline", "model.width=0"], "model.width must be >= 1"),
    (["baseline", "--method", "best"], "unknown selection method"),
    (["baseline", "--config", "/nonexistent.yaml"], "config file not found"),
    (["evaluate", "/nonexistent/dir"], "no manifest.json"),
    (["export", "/nonexistent/dir"], "no manifest.json"),
    (["run", "--workers", "0"], "parallel.workers must be >= 1"),
    (["run", "--workers", "2", "parallel.split=batch", "method=idc"], "split=batch is for method=mtt"),
])
def test_user_mistakes_give_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_data_says_where_it_looked(tmp_path, capsys):
    assert main(["baseline", "--data-root", str(tmp_path / "nothing"), "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err


def test_console_script_error_has_no_traceback():
    res = subprocess.run([sys.executable, "-m", "pdd_ray", "baseline", "--ipc", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "ipc" in res.stderr


def test_baseline_evaluate_export_round(tmp_path, tiny_fashion_root, capsys):
    out = tmp_path / "set"
    assert main(["baseline", "--data-root", str(tiny_fashion_root), "--ipc", "2", "--out", str(out),
                 "--device", "cpu", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "convnet/progressive" in printed and "±" in printed
    assert main(["evaluate", str(out), "--mode", "union", "--runs", "1", "--epochs", "1", "--device", "cpu",
                 "model.width=4"]) == 0
    assert "convnet/union" in json.loads((out / "eval.json").read_text())
    assert main(["export", str(out), "--to", "parquet"]) == 0
    assert (out / "synthetic.parquet").is_file()


def test_data_info_and_verify(tiny_fashion_root, capsys):
    assert main(["data", "info", "--data-root", str(tiny_fashion_root)]) == 0
    assert "fashion_mnist" in capsys.readouterr().out
    # the tiny copy has 300 training images, not 60000: verify must say so and fail
    assert main(["data", "verify", "--data-root", str(tiny_fashion_root)]) == 1
    assert "problem" in capsys.readouterr().out
