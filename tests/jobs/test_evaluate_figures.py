"""``pdd-ray evaluate DIR --figures ...``: random real at equal budget, no augmentation, full real data."""

import json

import pytest
import torch

import pdd_ray
from pdd_ray import synset as synset_io
from pdd_ray.cli import build_parser, main
from pdd_ray.config import to_dict
from pdd_ray.jobs.evaluate import FIGURE_CHOICES, expand_figures
from pdd_ray.jobs.run import evaluate_and_report
from tests.jobs.test_run import _setup


def _saved_set(tmp_path, root, *extra):
    config, data, synset = _setup(root, tmp_path / "run", *extra)
    synset.config = to_dict(config)
    return config, data, synset, synset_io.save(synset, tmp_path / "run" / "synthetic")


def _entry(directory):
    (entry,) = json.loads((directory / "eval.json").read_text()).values()
    return entry


def _record_epochs(monkeypatch):
    """Replace the training epoch by a recorder of (images, augmentation on?, cutmix): every epoch, in order."""
    import pdd_ray.evaluation.protocol as protocol
    calls = []
    monkeypatch.setattr(protocol, "train_epoch", lambda model, images, labels, optimizer, batch_size, augment,
                        generator, cutmix=0.0, precision="fp32": calls.append((len(labels), augment is not None, cutmix)))
    return calls


def test_random_real_is_the_runs_own_equal_budget_baseline(tmp_path, tiny_fashion_root, capsys):
    config, data, synset, directory = _saved_set(tmp_path, tiny_fashion_root, "eval.runs=2")
    metrics = evaluate_and_report(config, data, synset, torch.device("cpu"), progress=False)
    assert main(["evaluate", str(directory), "--device", "cpu", "--figures", "random-real"]) == 0
    entry = _entry(directory)
    figure = entry["figures"]["random_real"]
    # same images, same protocol, same epochs: exactly the numbers the run reported for random real
    assert figure["result"]["per_run"] == metrics["random_real"]["per_run"]
    assert figure["epochs_per_net"] == metrics["random_real_epochs"] == entry["epochs_per_net"]
    assert figure["images_per_class"] == 3 and figure["images"] == 30 and figure["capped_classes"] == []
    assert figure["set_minus_this"] == pytest.approx(entry["result"]["mean"] - figure["result"]["mean"])
    assert "union mode" in figure["protocol"] and "test split" in figure["protocol"]
    out = capsys.readouterr().out
    assert "random real, 3 per class (equal budget)" in out
    assert f"{100 * figure['set_minus_this']:+.2f}" in out


def test_no_aug_trains_the_set_again_with_augmentation_off(tmp_path, tiny_fashion_root, monkeypatch):
    *_, directory = _saved_set(tmp_path, tiny_fashion_root, "augment.dsa=true", "eval.cutmix=0.5")
    calls = _record_epochs(monkeypatch)
    assert main(["evaluate", str(directory), "--device", "cpu"]) == 0
    headline = list(calls)
    assert headline and all(aug and mix == 0.5 for _, aug, mix in headline)
    assert "figures" not in _entry(directory)  # nothing extra unless asked
    calls.clear()
    assert main(["evaluate", str(directory), "--device", "cpu", "--figures", "no-aug"]) == 0
    again, no_aug = calls[:len(headline)], calls[len(headline):]
    assert again == headline
    assert [n for n, _, _ in no_aug] == [n for n, _, _ in headline]  # the same phases and epochs...
    assert not any(aug or mix for _, aug, mix in no_aug)  # ...with DSA and CutMix off
    figure = _entry(directory)["figures"]["no_aug"]
    assert "no augmentation" in figure["protocol"] and list(_entry(directory)["figures"]) == ["no_aug"]


def test_full_real_trains_the_whole_training_split_for_the_sets_epochs(tmp_path, tiny_fashion_root, monkeypatch):
    _, data, _, directory = _saved_set(tmp_path, tiny_fashion_root)
    calls = _record_epochs(monkeypatch)
    assert main(["evaluate", str(directory), "--device", "cpu", "--figures", "full-real"]) == 0
    entry = _entry(directory)
    figure = entry["figures"]["full_real"]
    whole = len(data.train)  # the training split less the validation hold-out: 300 - 40
    assert whole == 260 and figure["images"] == whole
    epochs = entry["epochs_per_net"]
    assert figure["epochs_per_net"] == epochs and len(calls) == 2 * epochs  # the set's epochs, as many on real
    (_, aug, mix) = calls[0]  # the set's own augmentation (this recipe: idc's CutMix)...
    assert calls[epochs:] == [(whole, aug, mix)] * epochs  # ...on the whole split, in one phase


def test_dd_ranking_figures_are_recorded_with_their_provenance(tmp_path, tiny_fashion_root, monkeypatch, capsys):
    *_, directory = _saved_set(tmp_path, tiny_fashion_root)
    _record_epochs(monkeypatch)
    assert main(["evaluate", str(directory), "--device", "cpu", "--figures", "dd-ranking"]) == 0
    entry = _entry(directory)
    assert list(entry["figures"]) == ["random_real", "no_aug"]
    assert {"config", "seed", "versions", "precision", "protocol"} <= set(entry)
    assert entry["config"]["figures"] == ["dd-ranking"] and entry["precision"]["stored_images"] == ["float32"]
    out = capsys.readouterr().out
    assert "this set without augmentation" in out and "random real, 3 per class" in out


def test_figure_names_are_checked_and_listed(tmp_path, tiny_fashion_root, capsys):
    *_, directory = _saved_set(tmp_path, tiny_fashion_root)
    assert expand_figures(["no-aug", "dd-ranking"]) == ("random-real", "no-aug")
    assert main(["evaluate", str(directory), "--device", "cpu", "--figures", "lrs"]) == 2
    err = capsys.readouterr().err
    assert "unknown evaluation figure 'lrs'" in err and all(name in err for name in FIGURE_CHOICES)
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    (action,) = [a for a in evaluate._actions if a.dest == "figures"]
    assert all(name in action.help for name in FIGURE_CHOICES)


def test_python_api_computes_the_same_figures(tmp_path, tiny_fashion_root, monkeypatch):
    *_, directory = _saved_set(tmp_path, tiny_fashion_root)
    calls = _record_epochs(monkeypatch)
    evaluated = pdd_ray.evaluate(directory, device="cpu", figures=["no-aug"])
    assert list(evaluated.figures) == ["no_aug"] and "no augmentation" in evaluated.figures["no_aug"]["protocol"]
    half = len(calls) // 2  # the set's phases, then the same again without augmentation
    assert [n for n, _, _ in calls[:half]] == [n for n, _, _ in calls[half:]] == [10, 10, 20, 20, 30, 30]
    assert calls[0][2] == 0.5 and all(mix == 0.0 and not aug for _, aug, mix in calls[half:])
    assert pdd_ray.evaluate(directory, device="cpu").figures == {}
