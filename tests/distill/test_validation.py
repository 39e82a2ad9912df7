"""The validation check continues from where progressive training on the earlier stages ends."""

import torch

from pdd_ray import synset as synset_io
from pdd_ray.distill.validation import ProgressiveValidator
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.evaluation.protocol import evaluate_synthetic, phases_for, train_on_phases
from pdd_ray.models import create_model, flatten_params

PROTOCOL = EvalProtocol(batch_size=8, epochs=2, seed=7)


def _make():
    return create_model("convnet", 1, 4, 8, width=4, depth=2)


def _stages(data, n):
    picks = [torch.arange(k, len(data.labels), 20) for k in range(n)]
    return [synset_io.Stage(data.images[p], data.labels[p], 0.02 * (k + 1)) for k, p in enumerate(picks)]


def _validator(earlier, candidate, data, **kw):
    args = dict(nets=2, epochs=2, protocol=PROTOCOL)
    args.update(kw)
    return ProgressiveValidator(earlier, candidate.labels, 1, _make, (data.images, data.labels), **args)


def test_start_is_the_final_evaluations_state_after_the_earlier_stages(tiny_separable):
    *earlier, candidate = _stages(tiny_separable, 3)
    validator = _validator(earlier, candidate, tiny_separable)
    for run, start in enumerate(validator.starts()):
        torch.manual_seed(7 + run)  # what evaluate_synthetic does for run ``run``
        generator = torch.Generator().manual_seed(7 + run)
        model = _make()
        train_on_phases(model, phases_for(earlier, "progressive", 2), batch_size=8, generator=generator)
        assert torch.equal(flatten_params(model), torch.cat([v.flatten() for k, v in start.weights.items()]))
        assert all(m is not None for m in start.momentum)  # momentum carried into the candidate's phase


def test_score_equals_progressive_evaluation_of_the_candidate_on_the_validation_split(tiny_separable):
    *earlier, candidate = _stages(tiny_separable, 3)
    validator = _validator(earlier, candidate, tiny_separable)
    score = validator(candidate.images, candidate.lr)
    reference = evaluate_synthetic(earlier + [candidate], (tiny_separable.images, tiny_separable.labels), _make,
                                   mode="progressive", runs=2, epochs=2, batch_size=8, seed=7, progress=False)
    assert abs(score - reference.mean) < 1e-9
    assert abs(validator(candidate.images, candidate.lr) - score) < 1e-9  # the cached start is not consumed


def test_scratch_start_is_union_training_from_a_fresh_net(tiny_separable):
    *earlier, candidate = _stages(tiny_separable, 2)
    validator = _validator(earlier, candidate, tiny_separable, start="scratch")
    union = evaluate_synthetic(earlier + [candidate], (tiny_separable.images, tiny_separable.labels), _make,
                               mode="union", runs=2, epochs=2, batch_size=8, seed=7, progress=False)
    assert abs(validator(candidate.images, candidate.lr) - union.mean) < 1e-9


def test_stage_one_starts_from_fresh_nets(tiny_separable):
    (candidate,) = _stages(tiny_separable, 1)
    start = _validator([], candidate, tiny_separable).starts()[1]
    torch.manual_seed(8)
    assert torch.equal(torch.cat([v.flatten() for v in start.weights.values()]), flatten_params(_make()))
    assert all(m is None for m in start.momentum)


def _same_state(a, b) -> bool:
    same_weights = all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    same_momentum = all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a.momentum, b.momentum))
    return same_weights and same_momentum and torch.equal(a.rng, b.rng)


def test_cached_starts_continue_the_last_stage_with_the_same_numbers(tiny_separable, tmp_path, monkeypatch):
    from pdd_ray.distill.validation import StartCache
    import pdd_ray.evaluation.recipe as recipe
    *earlier, candidate = _stages(tiny_separable, 3)
    cache = StartCache(tmp_path, "run settings")
    _validator(earlier[:1], earlier[1], tiny_separable, cache=cache).starts()  # stage 2 saves its starts
    assert cache.path(1).is_file()
    phases = []
    train = recipe.train_on_phases
    monkeypatch.setattr(recipe, "train_on_phases", lambda model, ps, **kw: phases.append(len(ps)) or
                        train(model, ps, **kw))
    continued = _validator(earlier, candidate, tiny_separable, cache=cache).starts()
    assert phases == [1, 1]  # one more phase (U_2) per net, not U_1 and U_2 again
    fresh = _validator(earlier, candidate, tiny_separable).starts()
    assert all(_same_state(a, b) for a, b in zip(continued, fresh, strict=True))
    assert cache.path(2).is_file()
    reread = _validator(earlier, candidate, tiny_separable, cache=cache).starts()  # a resumed stage reads them
    assert all(_same_state(a, b) for a, b in zip(reread, fresh, strict=True))


def test_cached_starts_of_other_stages_or_settings_are_not_used(tiny_separable, tmp_path):
    from pdd_ray.distill.validation import StartCache
    *earlier, candidate = _stages(tiny_separable, 3)
    StartCache(tmp_path, "settings A").save(earlier, _validator(earlier, candidate, tiny_separable).starts())
    assert StartCache(tmp_path, "settings B").load(earlier, _make) is None
    changed = [earlier[0], synset_io.Stage(earlier[1].images + 1, earlier[1].labels, earlier[1].lr)]
    assert StartCache(tmp_path, "settings A").load(changed, _make) is None
    assert StartCache(tmp_path, "settings A").load(earlier, _make) is not None
