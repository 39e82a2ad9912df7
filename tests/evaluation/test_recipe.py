"""EvalProtocol: built from config, trains what it says, and says what it trains."""

import re

import pytest
import torch

from pdd_ray.augment.dsa import DSA
from pdd_ray.config import AugmentConfig, EvalConfig, validate
from pdd_ray.errors import UserError
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.models import create_model
from pdd_ray.synset import Stage


def _stages(n=3):
    return [Stage(torch.full((4, 1, 8, 8), float(k)), torch.tensor([0, 1, 2, 3]), 0.01 * k) for k in range(1, n + 1)]


def test_defaults_are_the_official_evaluate_mtt_protocol():
    config = EvalConfig()
    assert (config.epochs, config.runs, config.schedule, config.batch_size) == (500, 5, "official", 256)
    protocol = EvalProtocol.from_config(config, AugmentConfig(), "convnet")
    assert protocol == EvalProtocol(arch="convnet")  # the dataclass defaults agree with the config's
    assert isinstance(protocol.augment, DSA) and protocol.augment.config.strategy == AugmentConfig().strategy
    assert EvalProtocol.from_config(config, AugmentConfig(dsa=False), "convnet").augment is None
    assert EvalProtocol.from_config(config, None).augment is None
    with pytest.raises(UserError, match="eval.schedule"):
        validate(EvalConfig(schedule="cosine"))


def test_from_config_copies_every_field():
    config = EvalConfig(runs=2, epochs=7, batch_size=16, lr=0.03, momentum=0.5, weight_decay=0.0, mode="sequential",
                        schedule="halfway", seed=9)
    p = EvalProtocol.from_config(config, AugmentConfig(dsa=False), "resnet10")
    assert (p.runs, p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay, p.mode, p.schedule, p.seed, p.arch) \
        == (2, 7, 16, 0.03, 0.5, 0.0, "sequential", "halfway", 9, "resnet10")


def test_total_epochs_counts_what_a_network_actually_trains(monkeypatch):
    import pdd_ray.evaluation.protocol as protocol_module
    calls = []
    monkeypatch.setattr(protocol_module, "train_epoch", lambda model, images, labels, *a, **k: calls.append(len(labels)))
    protocol = EvalProtocol(epochs=4, runs=1)
    make = lambda: create_model("convnet", 1, 4, 8, width=4, depth=2)
    split = (torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    for mode, expected in (("progressive", 15), ("union", 5), ("sequential", 15)):
        calls.clear()
        result = protocol.evaluate(_stages(), split, make, mode=mode, progress=False)
        assert len(calls) == protocol.total_epochs(3, mode) == expected, mode
        assert len(result.per_run[0]) == len(protocol.phases(_stages(), mode))
    assert EvalProtocol(epochs=4, schedule="halfway").total_epochs(3) == 12


def test_with_budget_gives_one_union_phase_of_exactly_the_total():
    for schedule in ("official", "halfway"):
        protocol = EvalProtocol(epochs=500, schedule=schedule)
        total = protocol.total_epochs(5)
        baseline = protocol.with_budget(total)
        assert baseline.mode == "union" and baseline.total_epochs(1) == total
        assert baseline.epochs == (total - 1 if schedule == "official" else total)
        assert (baseline.runs, baseline.lr, baseline.schedule) == (protocol.runs, protocol.lr, schedule)
    with pytest.raises(ValueError):
        EvalProtocol().with_budget(1)  # official trains at least 2 epochs a phase


def test_train_uses_the_protocol_settings(monkeypatch):
    import pdd_ray.evaluation.protocol as protocol_module
    seen = []

    def fake_epoch(model, images, labels, optimizer, batch_size, augment, generator):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"], group["weight_decay"], batch_size, augment))
        return 0.0

    monkeypatch.setattr(protocol_module, "train_epoch", fake_epoch)
    marker = object()
    protocol = EvalProtocol(epochs=3, batch_size=7, momentum=0.5, weight_decay=0.01, augment=marker, lr=0.2)
    model = create_model("convnet", 1, 4, 8, width=4, depth=2)
    protocol.train(model, protocol.phases(_stages(1)))
    assert [round(s[0], 6) for s in seen] == [0.2, 0.2, 0.2, 0.02]  # E=3: 4 epochs, x0.1 after index 2
    assert all(s[1:] == (0.5, 0.01, 7, marker) for s in seen)


def test_describe_states_the_numbers_actually_run():
    text = EvalProtocol(arch="convnet", augment=DSA()).describe(num_stages=5)
    for piece in ("5 fresh convnet networks", "progressive mode", "501 epochs per phase", "eval.epochs 500 + 1",
                  "epochs 1-252 at the phase's lr", "253-501 at lr x0.1", "2505 epochs in all over 5 stage(s)",
                  "momentum 0.9", "weight decay 0.0005", "batch 256", "rebuilt at the start of each phase",
                  "momentum buffers carried over", "DSA (color_crop_cutout_flip_scale_rotate, single) on every",
                  "learned lr"):
        assert piece in text, piece
    assert re.search(r"\.(\s|$)", text) is None and "\n" not in text  # one sentence (decimal points aside)
    halfway = EvalProtocol(epochs=300, schedule="halfway", lr=0.05, runs=1).describe(mode="union")
    for piece in ("1 fresh network ", "union mode", "300 epochs per phase", "epochs 1-150", "151-300",
                  "lr 0.05 in every phase", "no augmentation", "'halfway' schedule"):
        assert piece in halfway, piece
    assert "no lr drop" in EvalProtocol(epochs=2).describe()
