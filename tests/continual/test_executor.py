"""The Ray-task path builds the same memories as the in-process path, and the same results follow."""

import torch

from pdd_ray import synset as synset_io
from pdd_ray.continual.layout import ContinualDir
from pdd_ray.jobs.continual import run_continual


def test_phases_as_parallel_ray_tasks_give_the_in_process_memories_and_numbers(make_config, local_ray):
    builders = "builders=[{method: dc, stages: 2}, {method: herding}]"
    here = make_config(builders, "executor=process", out="here")
    tasks = make_config(builders, "executor=ray", out="tasks")
    a, b = run_continual(here, progress=False), run_continual(tasks, progress=False)
    assert a["built"] == b["built"] == 10
    for label in ("pdd_dc_2stages", "herding"):
        for t in range(5):
            x, y = (synset_io.load(ContinualDir.of(c).memory(label, t)) for c in (here, tasks))
            assert len(x.stages) == len(y.stages) >= 1
            for s, u in zip(x.stages, y.stages):
                assert torch.equal(s.images, u.images) and torch.equal(s.labels, u.labels) and s.lr == u.lr
                assert s.info.get("history") == u.info.get("history")  # the same iterations, losses and checks
    histories = [s.info["history"] for t in range(5)
                 for s in synset_io.load(ContinualDir.of(here).memory("pdd_dc_2stages", t)).stages]
    assert all(len(h) > 0 for h in histories)  # the distillation ran (in both places)
    for label in a["builders"]:
        assert [p["per_run"] for p in a["builders"][label]["phases"]] == \
            [p["per_run"] for p in b["builders"][label]["phases"]]
