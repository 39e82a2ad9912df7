import torch

from pdd_ray.experts.train import ExpertRecipe, train_expert, transition_init
from pdd_ray.models import create_model, flatten_params

RECIPE = ExpertRecipe(epochs=3, lr=0.05, batch_size=16, transition_epochs=2)


def _make():
    return create_model("convnet", 1, 4, 8, width=4, depth=2)


def _data(tiny_separable):
    return (tiny_separable.images, tiny_separable.labels)


def test_snapshots_start_at_init_and_follow_each_epoch(tiny_separable):
    result = train_expert(3, _make, _data(tiny_separable), _data(tiny_separable), RECIPE)
    torch.manual_seed(3)
    assert torch.equal(result.snapshots[0], flatten_params(_make()))  # row 0 = the random init
    assert result.snapshots.shape == (4, flatten_params(_make()).numel())
    steps = (result.snapshots[1:] - result.snapshots[:-1]).norm(dim=1)
    assert (steps > 0).all() and result.init == "random" and 0 <= result.test_accuracy <= 1


def test_same_seed_same_trajectory_other_seed_differs(tiny_separable):
    a = train_expert(1, _make, _data(tiny_separable), _data(tiny_separable), RECIPE)
    b = train_expert(1, _make, _data(tiny_separable), _data(tiny_separable), RECIPE)
    c = train_expert(2, _make, _data(tiny_separable), _data(tiny_separable), RECIPE)
    assert torch.equal(a.snapshots, b.snapshots) and not torch.equal(a.snapshots, c.snapshots)


def test_store_epochs_keeps_only_what_matching_uses(tiny_separable):
    recipe = ExpertRecipe(epochs=4, store_epochs=2, lr=0.05, batch_size=16)
    result = train_expert(0, _make, _data(tiny_separable), _data(tiny_separable), recipe)
    full = train_expert(0, _make, _data(tiny_separable), _data(tiny_separable),
                        ExpertRecipe(epochs=4, lr=0.05, batch_size=16))
    assert recipe.num_snapshots == 3 and result.snapshots.shape[0] == 3
    assert torch.equal(result.snapshots, full.snapshots[:3])


def test_transition_init_starts_from_the_union_trained_net(tiny_separable):
    union = (tiny_separable.images[::10], tiny_separable.labels[::10], 0.05)
    result = train_expert(5, _make, _data(tiny_separable), _data(tiny_separable), RECIPE, transition=union)
    # redo the transition by hand with the same seed: snapshot 0 must be exactly that network
    torch.manual_seed(5)
    model = _make()
    transition_init(model, union, RECIPE.transition_epochs, None, torch.Generator().manual_seed(5), RECIPE.batch_size)
    assert result.init == "transition"
    assert torch.equal(result.snapshots[0], flatten_params(model))
    torch.manual_seed(5)
    assert not torch.equal(result.snapshots[0], flatten_params(_make()))


def test_forgetting_counted_while_training(tiny_separable):
    recipe = ExpertRecipe(epochs=3, lr=0.05, batch_size=16)
    result = train_expert(0, _make, _data(tiny_separable), _data(tiny_separable), recipe, track_forgetting=True)
    assert result.forgetting.shape == (len(tiny_separable),)
    assert ((result.forgetting >= 0) | result.forgetting.isinf()).all()


def test_a_bf16_expert_trains_in_bf16_and_keeps_fp32_snapshots(tiny_separable):
    union = (tiny_separable.images[::10], tiny_separable.labels[::10], 0.05)
    fp32 = train_expert(2, _make, _data(tiny_separable), _data(tiny_separable), RECIPE, transition=union)
    bf16 = train_expert(2, _make, _data(tiny_separable), _data(tiny_separable), RECIPE, transition=union,
                        precision="bf16")
    assert bf16.snapshots.dtype == torch.float32
    assert not torch.equal(bf16.snapshots[0], fp32.snapshots[0])  # the transition ran in bf16 too
    assert not torch.equal(bf16.snapshots[-1], fp32.snapshots[-1])
    # bf16 products round, they do not derail: the trajectories stay close
    drift = (bf16.snapshots[-1] - fp32.snapshots[-1]).norm() / (fp32.snapshots[-1] - fp32.snapshots[0]).norm()
    assert drift < 0.2
