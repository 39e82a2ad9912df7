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

    def fake_epoch(model, images, labels, optimizer, batch_size, augment, generator, cutmix=0.0, precision="fp32"):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"], group["weight_decay"], batch_size, augment, cutmix, precision))
        return 0.0

    monkeypatch.setattr(protocol_module, "train_epoch", fake_epoch)
    marker = object()
    protocol = EvalProtocol(epochs=3, batch_size=7, momentum=0.5, weight_decay=0.01, augment=marker, lr=0.2,
                            precision="bf16")
    model = create_model("convnet", 1, 4, 8, width=4, depth=2)
    protocol.train(model, protocol.phases(_stages(1)))
    assert [round(s[0], 6) for s in seen] == [0.2, 0.2, 0.2, 0.02]  # E=3: 4 epochs, x0.1 after index 2
    assert all(s[1:] == (0.5, 0.01, 7, marker, 0.0, "bf16") for s in seen)


def test_idc_recipe_trains_with_cutmix_and_multistep(monkeypatch):
    """IDC's evaluation (train.py): batch 64, MultiStepLR x0.2 at 2E//3 and 5E//6, CutMix p 0.5 on every phase."""
    import pdd_ray.evaluation.protocol as protocol_module
    seen = []

    def fake_epoch(model, images, labels, optimizer, batch_size, augment, generator, cutmix=0.0, precision="fp32"):
        seen.append((round(optimizer.param_groups[0]["lr"], 9), batch_size, cutmix))
        return 0.0

    monkeypatch.setattr(protocol_module, "train_epoch", fake_epoch)
    protocol = EvalProtocol(epochs=12, batch_size=64, schedule="multistep", cutmix=0.5, lr=0.01)
    protocol.train(create_model("convnet", 1, 4, 8, width=4, depth=2), protocol.phases(_stages(1)))
    # E=12: milestones 8 and 10 -> 8 epochs at 0.01, 2 at 0.002, 2 at 0.0004
    assert [s[0] for s in seen] == [0.01] * 8 + [0.002] * 2 + [0.0004] * 2
    assert all(s[1:] == (64, 0.5) for s in seen)
    text = protocol.describe(num_stages=1)
    assert "CutMix with probability 0.5" in text and "x0.2 after epoch 8 and again after epoch 10" in text


def test_multistep_schedule_matches_idc_milestones():
    from pdd_ray.evaluation.protocol import epochs_run, lr_factor, multistep_milestones
    assert multistep_milestones(200) == (133, 166)  # distill_idc.py warm-up: epochs / 5 = 200
    assert multistep_milestones(1000) == (666, 833)
    assert epochs_run(200, "multistep") == 200
    assert lr_factor(132, 200, "multistep") == 1.0 and lr_factor(133, 200, "multistep") == pytest.approx(0.2)
    assert lr_factor(166, 200, "multistep") == pytest.approx(0.04)


def test_cutmix_is_a_real_training_change():
    """The same seeded run with and without CutMix ends with different weights (it is actually applied)."""
    torch.manual_seed(0)
    net_a = create_model("convnet", 1, 4, 8, width=4, depth=2)
    net_b = create_model("convnet", 1, 4, 8, width=4, depth=2)
    net_b.load_state_dict(net_a.state_dict())
    images = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    phases = EvalProtocol(epochs=2).phases([Stage(images, torch.arange(4).repeat(4), 0.1)])
    EvalProtocol(epochs=2, cutmix=0.0).train(net_a, phases, generator=torch.Generator().manual_seed(3))
    EvalProtocol(epochs=2, cutmix=1.0).train(net_b, phases, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(next(net_a.parameters()), next(net_b.parameters()))


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


def test_best_over_checkpoints_only_on_request_and_labelled_test_selected():
    test = (torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(4).repeat(5))
    stages = [Stage(torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(4).repeat(2),
                    0.05)]

    def make_model():
        return create_model("convnet", 1, 4, 8, width=4, depth=2)
    plain = EvalProtocol(epochs=4, runs=1, schedule="multistep").evaluate(stages, test, make_model, progress=False)
    assert "best_over_checkpoints" not in plain.to_dict()
    protocol = EvalProtocol(epochs=4, runs=1, schedule="multistep", checkpoints=2)
    result = protocol.evaluate(stages, test, make_model, progress=False).to_dict()
    assert result["final"] == plain.to_dict()["final"]  # measuring at checkpoints changes no training
    best = result["best_over_checkpoints"]
    assert best["final"][0] >= result["final"][0] and "test split" in best["selected_on"]
    assert "selected on the test set" in protocol.describe()
