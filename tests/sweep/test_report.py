"""Sweep results from rows: the table, best by validation, results.csv/json, the heatmap, trial dirs."""

import csv
import json

import pytest

from pdd_ray.provenance import write_json
from pdd_ray.sweep.report import (best_row, collect_rows, format_table, heatmap_cells, merge_outcomes,
                                  save_heatmap, write_results)
from pdd_ray.sweep.trial import RESULT_FILE, TRIAL_FILE


def _row(stages, ipc, val, test, status="done", **params):
    return {"trial": f"s{stages}i{ipc}" + "".join(f"_{k}{v}" for k, v in params.items()),
            "params": {"stages.num_stages": stages, "stages.ipc": ipc, **params}, "num_stages": stages,
            "ipc": ipc, "total_ipc": stages * ipc, "val_accuracy": val, "test_accuracy": test, "status": status}


ROWS = [_row(1, 2, 0.50, 0.60), _row(2, 1, 0.70, 0.55), _row(2, 2, None, None, "incomplete")]


def test_best_is_chosen_on_validation_never_on_test():
    assert best_row(ROWS)["trial"] == "s2i1"  # test accuracy would have picked s1i2
    assert best_row(ROWS, mode="min")["trial"] == "s1i2"
    assert best_row([ROWS[2]]) is None


def test_table_shows_percentages_statuses_and_marks_the_best():
    lines = format_table([_row(1, 2, 0.5, 0.6, **{"gm.lr_img": 0.0123456}), _row(2, 1, 0.7, None)]).splitlines()
    assert lines[0].split() == ["gm.lr_img", "stages", "ipc", "total", "val", "%", "test", "%", "status"]
    assert lines[1].split() == ["0.01235", "1", "2", "2", "50.00", "60.00", "done"]
    assert lines[2].split()[:7] == ["-", "2", "1", "2", "70.00", "-", "done"] and lines[2].endswith("<- best (val)")


def test_results_csv_and_json_hold_one_row_per_trial(tmp_path):
    paths = write_results(tmp_path, ROWS, {"seed": 3, "metric": "val_accuracy"})
    with open(paths["csv"]) as handle:
        table = list(csv.DictReader(handle))
    assert [r["trial"] for r in table] == ["s1i2", "s2i1", "s2i2"]
    assert table[1]["val_accuracy"] == "0.7" and table[2]["val_accuracy"] == "" and table[2]["status"] == "incomplete"
    assert "stages.num_stages" not in table[0]  # shown as num_stages already
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"] == "s2i1" and saved["seed"] == 3 and len(saved["trials"]) == 3
    assert saved["versions"]["torch"] and saved["created"]
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_record_the_one_protocol_sentence_and_epochs_per_net(tmp_path):
    rows = [{**ROWS[0], "protocol": "P", "epochs_per_net": 501}, {**ROWS[1], "protocol": "P", "epochs_per_net": 1002}]
    paths = write_results(tmp_path, rows, {"seed": 0})
    with open(paths["csv"]) as handle:
        assert [r["epochs_per_net"] for r in csv.DictReader(handle)] == ["501", "1002"]
    assert json.loads((tmp_path / "results.json").read_text())["protocol"] == "P"


def test_heatmap_cells_keep_the_best_trial_per_shape():
    rows = [_row(2, 1, 0.4, 0.9, seed=0), _row(2, 1, 0.6, 0.5, seed=1), _row(1, 1, 0.9, 0.1, "stopped")]
    cells = heatmap_cells(rows)
    assert list(cells) == [(2, 1)] and cells[(2, 1)]["params"]["seed"] == 1


def test_heatmap_png_is_written(tmp_path):
    path = save_heatmap(ROWS, tmp_path / "h.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_rows_are_read_back_from_trial_directories(tmp_path):
    done, running = tmp_path / "trials" / "a", tmp_path / "trials" / "b"
    write_json(done / TRIAL_FILE, {"trial": "a", "params": {"seed": 1}, "num_stages": 1, "ipc": 1})
    write_json(done / RESULT_FILE, {"trial": "a", "params": {"seed": 1}, "num_stages": 1, "ipc": 1,
                                    "val_accuracy": 0.5})
    write_json(running / TRIAL_FILE, {"trial": "b", "params": {"seed": 2}, "num_stages": 1, "ipc": 1})
    (tmp_path / "trials" / "empty").mkdir()
    rows = collect_rows(tmp_path)
    assert [(r["trial"], r["status"]) for r in rows] == [("a", "done"), ("b", "incomplete")]
    merged = merge_outcomes(rows, {"b": {"params": {"seed": 2}, "error": "UserError: boom", "stopped": False},
                                   "c": {"params": {"seed": 3}, "error": None, "stopped": True}})
    assert {r["trial"]: r["status"] for r in merged} == {"a": "done", "b": "error", "c": "stopped"}
    assert [r for r in merged if r["trial"] == "b"][0]["error"] == "UserError: boom"


@pytest.mark.parametrize("rows", [[], [ROWS[2]]])
def test_nothing_finished_still_gives_a_table_and_results(rows, tmp_path):
    assert "status" in format_table(rows)
    paths = write_results(tmp_path, rows, {})
    assert json.loads((tmp_path / "results.json").read_text())["best"] is None
    assert ("heatmap" in paths) == bool(rows)
