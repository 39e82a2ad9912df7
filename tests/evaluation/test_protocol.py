import pytest
import torch

from pdd_ray.evaluation import epochs_run, evaluate_synthetic, make_optimizer, phases_for, train_on_phases
from pdd_ray.evaluation.protocol import epochs_setting, first_decayed_epoch
from pdd_ray.models import create_model
from pdd_ray.synset import Stage
from pdd_ray.train.loop import train_epoch


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


def _record_epochs(monkeypatch):
    """Replace train_epoch by a spy: (optimizer id, lr, images, momentum buffers at the epoch's start) per epoch."""
    import pdd_ray.evaluation.protocol as protocol
    seen = []

    def fake_epoch(model, images, labels, optimizer, *args, **kwargs):
        seen.append((id(optimizer), optimizer.param_groups[0]["lr"], len(labels)))
        return 0.0

    monkeypatch.setattr(protocol, "train_epoch", fake_epoch)
    return seen


def _tiny_model():
    return create_model("convnet", 1, 4, 8, width=4, depth=2)


def test_official_schedule_runs_e_plus_one_epochs_and_drops_lr_after_epoch_e_half_plus_one(monkeypatch):
    seen = _record_epochs(monkeypatch)
    train_on_phases(_tiny_model(), phases_for(_stages()[:2], "progressive", epochs=6))  # schedule="official"
    # E = 6: range(7) epochs; indices 0..4 (= E//2 + 1) at lr, 5 and 6 at lr/10; phase 2 restarts at its lr
    assert [round(lr, 6) for _, lr, _ in seen] == [0.01] * 5 + [0.001] * 2 + [0.02] * 5 + [0.002] * 2
    assert [n for _, _, n in seen] == [4] * 7 + [8] * 7
    assert len({opt for opt, _, _ in seen}) == 1  # one optimizer, so its momentum is never reset


@pytest.mark.parametrize("epochs, run, first", [(500, 501, 252), (300, 301, 152), (4, 5, 4), (3, 4, 3),
                                                (2, 3, None), (1, 2, None)])
def test_official_epoch_counts_and_first_decayed_epoch(epochs, run, first):
    assert epochs_run(epochs, "official") == run
    assert first_decayed_epoch(epochs, "official") == first
    assert epochs_setting(run, "official") == epochs


def test_halfway_schedule_is_still_reachable(monkeypatch):
    seen = _record_epochs(monkeypatch)
    train_on_phases(_tiny_model(), phases_for(_stages()[:2], "progressive", epochs=4), schedule="halfway")
    assert [round(lr, 6) for _, lr, _ in seen] == [0.01, 0.01, 0.001, 0.001, 0.02, 0.02, 0.002, 0.002]
    assert epochs_run(300, "halfway") == 300 and first_decayed_epoch(300, "halfway") == 150
    assert first_decayed_epoch(1, "halfway") is None
    with pytest.raises(ValueError):
        train_on_phases(_tiny_model(), phases_for(_stages()[:1], "union", epochs=1), schedule="cosine")


def _real_phases(data, epochs=3):
    stages = [Stage(data.images[i::10], data.labels[i::10], lr) for i, lr in ((0, 0.05), (1, 0.02))]
    return phases_for(stages, "progressive", epochs)


def _reference_by_hand(model, phases, generator, carry=True):
    """The reference's loop written out: a fresh SGD per phase, the previous phase's state swapped in,
    E + 1 epochs, lr x0.1 after epoch index E//2 + 1."""
    state = None
    for phase in phases:
        optimizer = torch.optim.SGD(model.parameters(), lr=phase.lr, momentum=0.9, weight_decay=5e-4)
        if carry and state is not None:
            optimizer.state = state
        lr = phase.lr
        for epoch in range(phase.epochs + 1):
            train_epoch(model, phase.images, phase.labels, optimizer, 8, None, generator)
            if epoch == phase.epochs // 2 + 1:
                lr *= 0.1
                for group in optimizer.param_groups:
                    group["lr"] = lr
        state = optimizer.state
    return model


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_matches_a_fresh_sgd_per_phase_with_momentum_carried_and_not_one_without(tiny_separable):
    phases = _real_phases(tiny_separable, epochs=3)
    torch.manual_seed(0)
    init = _tiny_model().state_dict()

    def trained(fn, **kwargs):
        model = _tiny_model()
        model.load_state_dict(init)
        return fn(model, phases, torch.Generator().manual_seed(1), **kwargs)

    ours = trained(lambda m, ph, g: train_on_phases(m, ph, batch_size=8, generator=g))
    assert _same_weights(ours, trained(_reference_by_hand))
    assert not _same_weights(ours, trained(_reference_by_hand, carry=False))  # momentum reset would differ


def test_momentum_buffers_enter_the_next_phase_untouched(tiny_separable, monkeypatch):
    import pdd_ray.evaluation.protocol as protocol
    real_epoch, at_start = protocol.train_epoch, []

    def spy(model, images, labels, optimizer, *args, **kwargs):
        at_start.append([optimizer.state[p].get("momentum_buffer") for p in model.parameters()])
        at_start[-1] = [None if m is None else m.clone() for m in at_start[-1]]
        return real_epoch(model, images, labels, optimizer, *args, **kwargs)

    monkeypatch.setattr(protocol, "train_epoch", spy)
    model = _tiny_model()
    optimizer = make_optimizer(model, 0.01, 0.9, 5e-4)
    after = []
    train_on_phases(model, _real_phases(tiny_separable, epochs=1), batch_size=8, optimizer=optimizer,
                    after_phase=lambda k, m: after.append([optimizer.state[p]["momentum_buffer"].clone()
                                                           for p in m.parameters()]))
    assert all(m is None for m in at_start[0])  # a new optimizer: no momentum yet
    second_phase_start = at_start[epochs_run(1, "official")]
    assert all(torch.equal(a, b) for a, b in zip(after[0], second_phase_start))
    assert any(a.abs().sum() > 0 for a in second_phase_start)


def test_optimizer_continuation_equals_one_call_over_all_phases(tiny_separable):
    phases = _real_phases(tiny_separable, epochs=2)
    torch.manual_seed(0)
    init = _tiny_model().state_dict()
    models = []
    for _ in range(3):
        models.append(_tiny_model())
        models[-1].load_state_dict(init)
    whole = train_on_phases(models[0], phases, batch_size=8, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    optimizer = make_optimizer(models[1], 0.5, 0.9, 5e-4)  # its lr is overwritten by each phase's
    train_on_phases(models[1], phases[:1], batch_size=8, generator=generator, optimizer=optimizer)
    train_on_phases(models[1], phases[1:], batch_size=8, generator=generator, optimizer=optimizer)
    assert _same_weights(whole, models[1])
    generator = torch.Generator().manual_seed(3)
    train_on_phases(models[2], phases[:1], batch_size=8, generator=generator)
    train_on_phases(models[2], phases[1:], batch_size=8, generator=generator)  # momentum lost in between
    assert not _same_weights(whole, models[2])


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


def test_phases_are_views_of_one_union_not_copies():
    progressive = phases_for(_stages(), "progressive", epochs=2)
    base = progressive[-1].images.untyped_storage().data_ptr()
    assert all(p.images.untyped_storage().data_ptr() == base for p in progressive)  # no per-prefix copy
    sequential = phases_for(_stages(), "sequential", epochs=2)
    assert len({p.images.untyped_storage().data_ptr() for p in sequential}) == 1


def test_view_phases_train_exactly_as_concatenated_copies(tiny_separable):
    """The view-based phase list gives the same networks as concatenating every prefix union afresh."""
    from pdd_ray.evaluation import Phase, evaluate_run
    data = tiny_separable
    stages = [Stage(data.images[i::16], data.labels[i::16], 0.02 * (i + 1)) for i in range(3)]
    copies = [Phase(torch.cat([s.images for s in stages[: k + 1]]).clone(),
                    torch.cat([s.labels for s in stages[: k + 1]]).clone(), stages[k].lr, 3) for k in range(3)]
    make = lambda: create_model("convnet", 1, 4, 8, width=4, depth=2)
    test = (data.images, data.labels)
    views = evaluate_run(phases_for(stages, "progressive", 3), test, make, seed=3, batch_size=8)
    reference = evaluate_run(copies, test, make, seed=3, batch_size=8)
    assert views == pytest.approx(reference, abs=1e-6) and len(views) == 3
