"""Kill and resume: finished phases (and finished builders within a phase) are never rebuilt."""

import json

import pytest

from pdd_ray.continual.layout import ContinualDir
from pdd_ray.errors import UserError
from pdd_ray.jobs.continual import run_continual


class Killed(RuntimeError):
    pass


def _spy_builds(monkeypatch, fail_at=None):
    """Record (builder, phase) of every memory built; raise ``Killed`` when ``fail_at`` comes up."""
    import pdd_ray.continual.executor as executor
    import pdd_ray.continual.memory as memory
    real, built = memory.build_memory, []  # the original, not an earlier spy

    def build(config, builder, split, phase, *args, **kwargs):
        if (builder.label, phase) == fail_at:
            raise Killed("injected")
        built.append((builder.label, phase))
        return real(config, builder, split, phase, *args, **kwargs)

    monkeypatch.setattr(executor, "build_memory", build)
    return built


def _files(config) -> dict[str, bytes]:
    root = ContinualDir.of(config).root / "memories"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_a_run_killed_after_phase_2_resumes_without_recomputing_phases_1_and_2(make_config, monkeypatch):
    config = make_config()
    # killed in phase 3, after its first builder (dc) finished and before random started
    built = _spy_builds(monkeypatch, fail_at=("random", 2))
    with pytest.raises(Killed):
        run_continual(config, progress=False)
    assert built == [("pdd_dc_2stages", 0), ("random", 0), ("pdd_dc_2stages", 1), ("random", 1),
                     ("pdd_dc_2stages", 2)]
    before = _files(config)
    assert not ContinualDir.of(config).results.exists()

    built = _spy_builds(monkeypatch)
    summary = run_continual(config, progress=False)
    assert built == [("random", 2), ("pdd_dc_2stages", 3), ("random", 3), ("pdd_dc_2stages", 4), ("random", 4)]
    assert summary["built"] == 5
    after = _files(config)
    assert all(after[name] == data for name, data in before.items())  # nothing finished was rewritten

    built = _spy_builds(monkeypatch)
    again = run_continual(config, progress=False)  # all done: nothing built, every evaluation read back
    assert built == [] and again["built"] == 0
    assert again["builders"] == summary["builders"]


def test_an_interrupted_evaluation_resumes_from_the_phases_it_finished(make_config, monkeypatch):
    import pdd_ray.jobs.continual as job
    config = make_config()
    real, calls = job.run_evaluations, []

    def flaky(config, bundle, device, evaluations, progress):
        calls.append(bundle.num_classes)
        if len(calls) == 3:
            raise Killed("injected during the evaluation after phase 3")
        return real(config, bundle, device, evaluations, progress)

    monkeypatch.setattr(job, "run_evaluations", flaky)
    with pytest.raises(Killed):
        run_continual(config, progress=False)
    calls.clear()
    monkeypatch.setattr(job, "run_evaluations", lambda *a: calls.append(a[1].num_classes) or real(*a))
    run_continual(config, progress=False)
    assert calls == [6, 8, 10]  # phases 1-2 were evaluated before the kill and are read back


def test_a_rerun_with_another_class_order_refuses_the_old_memories(make_config):
    config = make_config("builders=[{method: random}]")
    run_continual(config, progress=False)
    marker = json.loads(ContinualDir.of(config).marker("random", 0).read_text())
    assert marker["finished"] and len(marker["classes"]) == 2
    with pytest.raises(UserError, match="classes"):
        run_continual(make_config("builders=[{method: random}]", "phases.order_seed=99"), progress=False)
