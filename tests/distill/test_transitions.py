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


# ---- stage-1 experts train only what matching reads -------------------------------------------

def test_stage_one_experts_train_only_the_epochs_matching_reads(tmp_path):
    config = _config(tmp_path, "experts.recipe.epochs=50")
    assert experts_config(config, 0).recipe.epochs == 3 + 2  # snapshots 0..5 are all matching reads
    assert experts_config(config, 0, reads=9).recipe.epochs == 9  # a sweep: the furthest trial's need
    kept = _config(tmp_path, "experts.recipe.epochs=6")
    assert experts_config(kept, 0, reads=9).recipe.epochs == 6  # never more than the recipe


def test_forgetting_counts_and_buffers_begun_with_the_full_recipe_keep_every_epoch(tmp_path):
    counting = _config(tmp_path, "experts.recipe.epochs=50", "experts.track_forgetting=true")
    assert experts_config(counting, 0).recipe.epochs == 50
    config = _config(tmp_path, "experts.recipe.epochs=50")
    begun = expert_dir(config, 0)
    begun.mkdir(parents=True)
    (begun / "manifest.json").write_text('{"recipe": {"epochs": 50}}')
    assert experts_config(config, 0).recipe.epochs == 50  # resumed as begun, or its recipe would not match


def test_a_recipe_reading_past_matching_is_warned_about_once_before_compute(tmp_path, caplog, monkeypatch):
    from pdd_ray.distill import transitions
    transitions._warned.clear()
    monkeypatch.setattr(transitions, "ensure_experts", lambda *a, **k: None)  # the compute that follows the warning

    with caplog.at_level("WARNING", logger="pdd_ray.distill.transitions"):
        config = _config(tmp_path, "experts.recipe.epochs=50")
        assert not caplog.records  # validation alone says nothing (a sweep validates every trial)
        for _ in range(2):
            config.base.before_stage(config, None, 0, progress=False)
    warnings = [r for r in caplog.records if "matching reads epochs 0..5" in r.getMessage()]
    assert len(warnings) == 1 and "train 5 epochs" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="pdd_ray.distill.transitions"):
        config = _config(tmp_path, "experts.recipe.epochs=5")
        config.base.before_stage(config, None, 0, progress=False)
    assert not caplog.records


# ---- the builder is handed the run's data and finished stages ---------------------------------

def _prepared_run(tmp_path, tiny_fashion_root):
    from pdd_ray import synset as synset_io
    from pdd_ray.data.bundle import create_dataset
    config = _config(tmp_path, f"data.root={tiny_fashion_root}", "data.val_size=40", "model.width=4",
                     "model.depth=2", "experts.num_experts=2")
    data = create_dataset(config.data)
    gen = torch.Generator().manual_seed(0)
    stages = [synset_io.Stage(torch.randn(10, *data.image_shape, generator=gen), torch.arange(10), lr=0.02)]
    synset_io.save(synset_io.SyntheticSet(data.name, data.num_classes, data.class_names, data.preprocessor, stages),
                   synthetic_dir(config))
    from pdd_ray.experts.buffer import _layout
    layout = _layout(experts_config(config, 0), data)
    TrajectoryStore.create(expert_dir(config, 0), dataset=data.name, preprocessing={}, model={}, layout=layout,
                           recipe={}, num_snapshots=2)
    return config, data, stages


def test_the_builder_reads_nothing_it_is_handed_and_builds_the_buffer_the_cli_path_would(
        tmp_path, tiny_fashion_root, monkeypatch):
    import contextlib

    from pdd_ray import cluster, synset as synset_io
    from pdd_ray.data import bundle
    from pdd_ray.distill.transitions import ensure_experts
    from pdd_ray.experts import buffer
    config, data, stages = _prepared_run(tmp_path, tiny_fashion_root)
    unions = []
    monkeypatch.setattr(buffer, "_run_tasks", lambda cfg, store, d, transition, *a, **k: unions.append(transition))
    monkeypatch.setattr(cluster, "ray_session", lambda *a, **k: contextlib.nullcontext())

    def refuse(*args, **kwargs):
        raise AssertionError("re-read from disk")
    with monkeypatch.context() as m:
        m.setattr(bundle, "create_dataset", refuse)
        m.setattr(synset_io, "load", refuse)
        ensure_experts(config, 1, False, data=data, finished=stages + ["a later stage is never used"])
    images, labels, lr = unions[0]
    assert torch.equal(images, stages[0].images) and torch.equal(labels, stages[0].labels) and lr == 0.02
    # The `pdd-ray experts --transition DIR` path reads them from disk: same union, same recorded identity
    # (the store refuses to reopen under another recipe record).
    buffer.build_buffer(experts_config(config, 1), progress=False)
    assert torch.equal(unions[1][0], images) and unions[1][2] == 0.02
