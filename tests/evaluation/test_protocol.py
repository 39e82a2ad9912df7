import pytest
import torch

from pdd_ray.evaluation import evaluate_synthetic, phases_for, train_on_phases
from pdd_ray.models import create_model
from pdd_ray.synset import Stage


def _stages():
    make = lambda k, lr: Stage(torch.full((4, 1, 8, 8), float(k)), torch.tensor([0, 1, 2, 3]), lr)
    return [make(1, 0.01), make(2, 0.02), make(3, None)]


def test_progressive_phases_are_growing_unions_with_stage_lrs():
    phases = phases_for(_stages(), "progressive", epochs=7)
    assert [len(p.labels) for p in phases] == [4, 8, 12]
    assert [p.lr for p in phases] == [0.01, 0.02, 0.01]  # missing learned lr -> protocol default 0.01
    assert torch.equal(phases[1].images[4:], torch.full((4, 1, 8, 8), 2.0))
    assert all(p.epochs == 7 for p in phases)


def test_union_and_sequential_phases():
    union = phases_for(_stages(), "union", epochs=3)
    assert len(union) == 1 and len(union[0].labels) == 12
    seq = phases_for(_stages(), "sequential", epochs=3)
    assert [p.images[0, 0, 0, 0].item() for p in seq] == [1.0, 2.0, 3.0]
    assert [len(p.labels) for p in seq] == [4, 4, 4]
    assert all(p.lr == 0.5 for p in phases_for(_stages(), "sequential", 3, lr=0.5))
    with pytest.raises(ValueError):
        phases_for(_stages(), "random", 3)


def test_optimizer_is_carried_across_phases_and_lr_drops_halfway(monkeypatch):
    seen = []
    import pdd_ray.evaluation.protocol as protocol

    def fake_epoch(model, images, labels, optimizer, *args, **kwargs):
        seen.append((id(optimizer), optimizer.param_groups[0]["lr"], len(labels)))
        return 0.0

    monkeypatch.setattr(protocol, "train_epoch", fake_epoch)
    model = create_model("convnet", 1, 4, 8, width=4, depth=2)
    train_on_phases(model, phases_for(_stages()[:2], "progressive", epochs=4))
    assert len({opt for opt, _, _ in seen}) == 1  # one optimizer through all phases
    assert [round(lr, 6) for _, lr, _ in seen] == [0.01, 0.01, 0.001, 0.001, 0.02, 0.02, 0.002, 0.002]
    assert [n for _, _, n in seen] == [4] * 4 + [8] * 4


def test_training_on_informative_images_beats_chance(tiny_separable):
    data = tiny_separable
    stages = [Stage(data.images[data.labels == c][:3].clone(), torch.full((3,), c), 0.05) for c in range(4)]
    # one stage holding 3 images of every class
    stage = Stage(torch.cat([s.images for s in stages]), torch.cat([s.labels for s in stages]), 0.05)
    make = lambda: create_model("convnet", 1, 4, 8, width=8, depth=2)
    result = evaluate_synthetic([stage], (data.images, data.labels), make, mode="union", runs=2, epochs=30,
                                batch_size=16, progress=False)
    assert len(result.per_run) == 2 and result.mean > 0.6  # chance is 0.25
    d = result.to_dict()
    assert d["runs"] == 2 and d["mean"] == pytest.approx(result.mean) and len(d["per_phase_mean"]) == 1


def test_same_seed_same_result_and_one_accuracy_per_phase(tiny_separable):
    data = tiny_separable
    stages = [Stage(data.images[i::20], data.labels[i::20], 0.05) for i in range(2)]
    make = lambda: create_model("convnet", 1, 4, 8, width=4, depth=2)
    kwargs = dict(mode="progressive", runs=1, epochs=2, batch_size=8, seed=5, progress=False)
    a = evaluate_synthetic(stages, (data.images, data.labels), make, **kwargs)
    b = evaluate_synthetic(stages, (data.images, data.labels), make, **kwargs)
    assert a.per_run == b.per_run and len(a.per_run[0]) == 2
