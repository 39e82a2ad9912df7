"""The run report: PDD next to random real images at the same total IPC and the same epochs in total."""

import json

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import load_config
from pdd_ray.data.bundle import create_dataset
from pdd_ray.distill.config import DistillConfig
from pdd_ray.jobs.run import evaluate_and_report

TINY = ["method=idc", "model.width=4", "model.depth=2", "data.val_size=40", "device=cpu", "augment.dsa=false",
        "stages.num_stages=3", "stages.ipc=1", "eval.runs=1", "eval.epochs=2"]


def _setup(root, out, *extra):
    config = load_config(DistillConfig, None, [f"data.root={root}", f"out={out}", *TINY, *extra])
    data = create_dataset(config.data)
    # three one-image-per-class "stages" of real images stand in for a distilled set
    stages = []
    for k in range(3):
        idx = torch.stack([torch.nonzero(data.train.labels == c)[k, 0] for c in range(data.num_classes)])
        stages.append(synset_io.Stage(data.train.images[idx], data.train.labels[idx], 0.01))
    return config, data, synset_io.SyntheticSet(data.name, data.num_classes, data.class_names, data.preprocessor,
                                                stages)


@pytest.mark.parametrize("schedule, per_phase", [("official", 3), ("halfway", 2)])
def test_random_baseline_trains_as_many_epochs_as_the_progressive_pdd_set(tmp_path, tiny_fashion_root, monkeypatch,
                                                                         schedule, per_phase):
    import pdd_ray.evaluation.protocol as protocol
    calls = []  # number of images of every epoch trained, in order
    monkeypatch.setattr(protocol, "train_epoch", lambda model, images, labels, *a, **k: calls.append(len(labels)))
    config, data, synset = _setup(tiny_fashion_root, tmp_path / "run", f"eval.schedule={schedule}")
    metrics = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    pdd_epochs = 3 * per_phase  # 3 progressive phases of eval.epochs=2
    assert metrics["pdd_epochs"] == metrics["random_real_epochs"] == pdd_epochs
    # PDD first: U_1, U_2, U_3 (10, 20, 30 images), per_phase epochs each; then the random union of 30
    assert calls == [10] * per_phase + [20] * per_phase + [30] * per_phase + [30] * pdd_epochs
    assert metrics["random_real"]["mode"] == "union" and len(metrics["random_real"]["per_phase_mean"]) == 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["pdd_epochs"] == saved["random_real_epochs"] == pdd_epochs
    assert f"{pdd_epochs} epochs in all over 3 stage(s)" in saved["protocol"]
    assert f"{pdd_epochs} epochs per phase" in saved["random_real_protocol"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"the random real images train {pdd_epochs} epochs in one union phase" in report
    assert f"| random real images (union) | 3 | {pdd_epochs} |" in report


def test_union_mode_pdd_and_baseline_train_one_phase_of_the_same_length(tmp_path, tiny_fashion_root, monkeypatch):
    import pdd_ray.evaluation.protocol as protocol
    calls = []
    monkeypatch.setattr(protocol, "train_epoch", lambda model, images, labels, *a, **k: calls.append(len(labels)))
    config, data, synset = _setup(tiny_fashion_root, tmp_path / "run", "eval.mode=union", "eval.schedule=official")
    metrics = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    assert metrics["pdd_epochs"] == metrics["random_real_epochs"] == 3
    assert calls == [30] * 3 + [30] * 3


def test_random_baseline_that_needs_more_images_than_a_class_has_says_so_before_compute(tmp_path, tiny_fashion_root,
                                                                                       capsys):
    from pdd_ray.jobs.run import baseline_capped, warn_if_baseline_capped
    config, data, _ = _setup(tiny_fashion_root, tmp_path / "run", "stages.num_stages=20", "stages.ipc=2")
    counts = torch.bincount(data.train.labels)
    assert baseline_capped(data, int(counts.min())) == []
    assert baseline_capped(data, 40) == list(range(10))  # every class has fewer than 40 training images
    warn_if_baseline_capped(config, data)
    assert "total IPC 40" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("*"))  # nothing written


def test_ray_executor_reports_the_in_process_numbers(tmp_path, tiny_fashion_root, local_ray):
    config, data, synset = _setup(tiny_fashion_root, tmp_path / "here", "eval.runs=2")
    here = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    config, data, synset = _setup(tiny_fashion_root, tmp_path / "ray", "eval.runs=2", "eval.executor=ray")
    remote = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    for name in ("pdd", "random_real"):
        for ours, theirs in zip(remote[name]["per_run"], here[name]["per_run"], strict=True):
            assert ours == pytest.approx(theirs, abs=1e-6)
    assert remote["executor"]["eval"] == "ray"


def test_accuracy_plot_shows_error_bars_the_random_baseline_and_carries_provenance(tmp_path, tiny_fashion_root,
                                                                                  monkeypatch):
    from PIL import Image

    import pdd_ray.jobs.run as run
    drawn = {}
    real_save = run.save_accuracy_plot
    monkeypatch.setattr(run, "save_accuracy_plot", lambda *a, **k: drawn.update(k) or real_save(*a, **k))
    config, data, synset = _setup(tiny_fashion_root, tmp_path / "run", "eval.runs=2")
    metrics = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    (errors,) = drawn["errors"].values()
    assert errors == pytest.approx(metrics["pdd"]["per_phase_std"]) and len(errors) == 3
    (reference,) = drawn["references"].values()
    assert (reference.mean, reference.std) == (metrics["random_real"]["mean"], metrics["random_real"]["std"])
    assert drawn["chance"] == pytest.approx(0.1)
    with Image.open(tmp_path / "run" / "accuracy_vs_stage.png") as img:
        assert img.text["Description"] == metrics["protocol"] and img.text["Source"] == "pdd-ray run"
        provenance = json.loads(img.text["Comment"])
    assert provenance["seed"] == config.seed and provenance["config"]["eval"]["runs"] == 2
    assert "torch" in provenance["versions"]
