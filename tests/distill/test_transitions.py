"""The transition chain: expert k of stage i+1 starts from snapshot 0 of expert k of stage i."""

import pytest
import torch

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.transitions import expert_dir, experts_config, synthetic_dir
from pdd_ray.experts import train as expert_train
from pdd_ray.experts.buffer import chain_starts
from pdd_ray.experts.train import ExpertRecipe, train_expert
from pdd_ray.models import create_model, flatten_params
from pdd_ray.trajectories import TrajectoryStore
from pdd_ray.models.functional import ParamLayout


def _config(tmp_path, *extra):
    return load_config(DistillConfig, None, ["device=cpu", f"out={tmp_path / 'run'}", "mtt.max_start_epoch=3",
                                             "mtt.expert_epochs=2", *extra])


def test_chained_experts_start_from_the_previous_buffer_and_train_only_what_matching_uses(tmp_path):
    config = _config(tmp_path, "experts.recipe.epochs=50", "experts.track_forgetting=true")
    first, second, third = (experts_config(config, i) for i in range(3))
    assert first.transition is None and first.transition_from is None and first.recipe.epochs == 50
    assert second.transition == str(synthetic_dir(config))
    assert second.transition_from == str(expert_dir(config, 0)) and third.transition_from == str(expert_dir(config, 1))
    assert second.recipe.epochs == 3 + 2 + 1 and second.recipe.num_snapshots == 7  # the reference's count
    assert second.recipe.transition_epochs == 1000 and not second.track_forgetting
    assert ExpertRecipe().transition_epochs == 1000  # the reference's epoch_eval_train


def test_without_transitions_every_stage_uses_the_stage_one_buffer(tmp_path):
    config = _config(tmp_path, "stages.transitions=false")
    assert expert_dir(config, 2) == expert_dir(config, 0)
    assert experts_config(config, 2).transition_from is None


def _make():
    return create_model("convnet", 1, 4, 8, width=4, depth=2)


def _store(tmp_path, experts):
    layout = ParamLayout.of(_make())
    store = TrajectoryStore.create(tmp_path / "prev", dataset="toy", preprocessing={}, model={}, layout=layout,
                                   recipe={}, num_snapshots=2)
    for k, snapshots in enumerate(experts):
        store.write_expert(k, snapshots, {"seed": k})
    return store


def test_expert_k_starts_bit_exactly_from_snapshot_zero_of_expert_k(tmp_path, tiny_separable, monkeypatch):
    numel = flatten_params(_make()).numel()
    previous = [torch.randn(2, numel, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    _store(tmp_path, previous)
    starts = chain_starts(str(tmp_path / "prev"), [0, 1])
    assert all(torch.equal(starts[k], previous[k][0]) for k in range(2))

    seen = []
    real_transition = expert_train.transition_init

    def spy(model, *args, **kwargs):
        seen.append(flatten_params(model).clone())  # the network the transition training starts from
        return real_transition(model, *args, **kwargs)

    monkeypatch.setattr(expert_train, "transition_init", spy)
    data = (tiny_separable.images, tiny_separable.labels)
    union = (tiny_separable.images[::10], tiny_separable.labels[::10], 0.05)
    recipe = ExpertRecipe(epochs=2, lr=0.05, batch_size=16, transition_epochs=1)
    result = train_expert(1, _make, data, data, recipe, transition=union, start=starts[1])
    assert torch.equal(seen[0], previous[1][0])
    assert result.init == "transition" and not torch.equal(result.snapshots[0], previous[1][0])  # U_i trained


def test_a_short_previous_buffer_is_refused(tmp_path):
    from pdd_ray.errors import UserError
    numel = flatten_params(_make()).numel()
    _store(tmp_path, [torch.zeros(2, numel)])
    with pytest.raises(UserError, match="needs expert 1"):
        chain_starts(str(tmp_path / "prev"), [0, 1])
