"""A phase's builders see only that phase's images; evaluation after phase t uses exactly phases 1..t."""

import torch

from pdd_ray import synset as synset_io
from pdd_ray.continual.layout import ContinualDir
from pdd_ray.continual.split import PhaseSplit
from pdd_ray.data.bundle import create_dataset
from pdd_ray.jobs.continual import run_continual


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def _phase_rows(split_images, labels, classes) -> set[bytes]:
    keep = torch.isin(labels, torch.tensor(classes))
    return _rows(split_images[keep])


def test_each_builder_is_handed_only_its_phases_images(make_config, monkeypatch):
    import pdd_ray.selection.coreset as coreset
    import pdd_ray.distill.driver as driver
    handed = []  # (builder, bundle)
    real_stages, real_select = driver.run_stages, coreset.select

    def spy_stages(config, data, *args, **kwargs):
        handed.append(("dc", data))
        return real_stages(config, data, *args, **kwargs)

    def spy_select(method, train, ipc, context):
        handed.append((method, train))
        return real_select(method, train, ipc, context)

    monkeypatch.setattr(driver, "run_stages", spy_stages)
    monkeypatch.setattr(coreset, "select", spy_select)
    config = make_config()
    run_continual(config, progress=False)
    data = create_dataset(config.data)
    split = PhaseSplit.of(config.phases, data.num_classes, config.seed)
    assert [name for name, _ in handed] == ["dc", "random"] * 5  # phase by phase, each builder once
    for t in range(5):
        classes = split.classes(t)
        bundle, train = handed[2 * t][1], handed[2 * t + 1][1]
        assert bundle.num_classes == 2 and train.num_classes == 2
        for name in ("train", "val", "test"):  # the distillation's bundle: every split cut to the phase
            got, full = getattr(bundle, name), getattr(data, name)
            assert _rows(got.images) == _phase_rows(full.images, full.labels, classes)
            assert set(got.labels.tolist()) == {0, 1}
        assert _rows(train.images) == _phase_rows(data.train.images, data.train.labels, classes)
        # and the memories hold only that phase's images (random real ones are rows of the phase's train split)
        memory_set = synset_io.load(ContinualDir.of(config).memory("random", t))
        assert _rows(memory_set.stages[0].images) <= _phase_rows(data.train.images, data.train.labels, classes)


def test_evaluation_after_phase_t_trains_on_phases_1_to_t_and_tests_on_their_classes(make_config, monkeypatch):
    import pdd_ray.jobs.continual as job
    seen_calls = []
    real = job.run_evaluations

    def spy(config, bundle, device, evaluations, progress):
        seen_calls.append((bundle, evaluations))
        return real(config, bundle, device, evaluations, progress)

    monkeypatch.setattr(job, "run_evaluations", spy)
    config = make_config()
    summary = run_continual(config, progress=False)
    data = create_dataset(config.data)
    split = PhaseSplit.of(config.phases, data.num_classes, config.seed)
    paths = ContinualDir.of(config)
    assert len(seen_calls) == 5
    for t, (bundle, evaluations) in enumerate(seen_calls):
        seen = split.seen(t)
        assert bundle.num_classes == 2 * (t + 1)  # one output per seen class
        for label, evaluation in evaluations.items():
            memories = [synset_io.load(paths.memory(label, p)) for p in range(t + 1)]
            for k, stage in enumerate(evaluation.stages):  # stage k = the seen phases' stage k, in phase order
                assert torch.equal(stage.images, torch.cat([m.stages[k].images for m in memories]))
                assert torch.equal(stage.labels, torch.cat([m.stages[k].labels + 2 * p
                                                            for p, m in enumerate(memories)]))
            assert set(evaluation.stages[-1].labels.tolist()) == set(range(2 * (t + 1)))
            images, labels = evaluation.split
            assert _rows(images) == _phase_rows(data.test.images, data.test.labels, seen)  # seen classes only
            for position, c in enumerate(seen):  # test labels = position in the class order
                assert torch.equal(images[labels == position], data.test.images[data.test.labels == c])
        assert set(evaluations) == {"pdd_dc_2stages", "random"}
    for label, b in summary["builders"].items():
        assert [p["seen_classes"] for p in b["phases"]] == [list(split.seen(t)) for t in range(5)]
        assert b["last"]["mean"] == b["phases"][-1]["mean"]
        assert abs(b["average_incremental"]["mean"] - sum(p["mean"] for p in b["phases"]) / 5) < 1e-12
