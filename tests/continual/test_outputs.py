"""continual.json / .csv / .png / report.md: method x phase, the incremental metrics, and the provenance."""

import csv
import io
import json

from PIL import Image

from pdd_ray.continual.layout import ContinualDir
from pdd_ray.jobs.continual import run_continual


def test_every_result_file_records_config_seed_versions_precision_and_protocol(make_config):
    config = make_config()
    run_continual(config, progress=False)
    paths = ContinualDir.of(config)
    record = json.loads(paths.results.read_text())
    for key in ("config", "seed", "versions", "precision", "protocol", "variant"):
        assert record[key] not in (None, "", {})
    assert "fresh network" in record["protocol"] and "seen" in record["protocol"]
    assert record["precision"]["compute"] == "float32"
    for b in record["builders"].values():
        assert [p["phase"] for p in b["phases"]] == [1, 2, 3, 4, 5]
        assert set(b) >= {"average_incremental", "last"}
        assert all(len(p["per_run"]) == 2 for p in b["phases"])  # eval.runs
    text = paths.table.read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert {c.split(":")[0] for c in comments} == {"# protocol", "# seed", "# precision", "# versions", "# config"}
    rows = list(csv.DictReader(io.StringIO("\n".join(l for l in text.splitlines() if not l.startswith("#")))))
    assert [r["method"] for r in rows] == ["pdd_dc_2stages", "random"]
    assert abs(float(rows[1]["phase_5_mean"]) - record["builders"]["random"]["phases"][4]["mean"]) < 1e-6
    png = Image.open(paths.plot)
    assert json.loads(png.text["Comment"])["seed"] == config.seed and "fresh network" in png.text["Description"]
    report = paths.report.read_text()
    assert "| pdd_dc_2stages |" in report and "average incremental" in report and "Protocol:" in report


def test_one_stage_memories_train_as_long_as_the_pdd_memory_under_equal_budget(make_config):
    summary = run_continual(make_config(), progress=False)
    pdd, rnd = summary["builders"]["pdd_dc_2stages"]["phases"], summary["builders"]["random"]["phases"]
    assert [p["epochs"] for p in pdd] == [6] * 5  # 2 stages x (eval.epochs 2 + 1)
    assert [p["epochs"] for p in rnd] == [6] * 5 and rnd[0]["mode"] == "union"
    assert len(pdd[0]["per_stage_mean"]) == 2  # progressive: accuracy after each stage of the memory
