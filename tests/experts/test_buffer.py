"""Expert buffers built through Ray (a local 2-CPU Ray shared by the module)."""

import pytest
import ray
import torch

from pdd_ray.config import load_config
from pdd_ray.experts.buffer import FAIL_ONCE_ENV, ExpertsConfig, build_buffer
from pdd_ray.trajectories import TrajectoryStore

TINY = ["model.width=4", "model.depth=2", "recipe.epochs=2", "recipe.batch_size=64", "recipe.lr=0.05",
        "data.val_size=40", "device=cpu", "augment.dsa=false"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker_dir = tmp_path_factory.mktemp("fail_once")
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {FAIL_ONCE_ENV: str(marker_dir)}})
    yield marker_dir
    ray.shutdown()


def _config(root, out, *extra):
    return load_config(ExpertsConfig, None, [f"data.root={root}", f"out={out}", *TINY, *extra])


def test_buffer_completes_despite_a_failing_attempt_and_resumes(local_ray, tmp_path, tiny_fashion_root):
    out = tmp_path / "buffer"
    # every expert's first attempt raises (injected); retries must complete the buffer
    summary = build_buffer(_config(tiny_fashion_root, out, "num_experts=2"), progress=False)
    assert summary == {"out": str(out), "trained": 2, "complete": 2}
    assert {"buffer_0", "buffer_1"} <= {p.name for p in local_ray.iterdir()}
    store = TrajectoryStore.open(out)
    first = store.trajectory(0).clone()
    assert store.trajectory(0).shape[0] == 3 and store.info(1)["init"] == "random"
    # asking for more experts trains only the missing one and leaves the others untouched
    summary = build_buffer(_config(tiny_fashion_root, out, "num_experts=3"), progress=False)
    assert summary["trained"] == 1 and summary["complete"] == 3
    assert torch.equal(TrajectoryStore.open(out).trajectory(0), first)


def test_failure_without_retries_is_reported(local_ray, tmp_path, tiny_fashion_root):
    from pdd_ray.errors import UserError
    out = tmp_path / "fails"
    # the injected first-attempt failure surfaces when no retry is allowed
    with pytest.raises(UserError, match="failed after 0 retries"):
        build_buffer(_config(tiny_fashion_root, out, "num_experts=1", "max_retries=0", "seed=0"), progress=False)


def test_changed_recipe_refuses_to_mix_into_existing_buffer(local_ray, tmp_path, tiny_fashion_root):
    from pdd_ray.errors import UserError
    out = tmp_path / "mixed"
    build_buffer(_config(tiny_fashion_root, out, "num_experts=1"), progress=False)
    with pytest.raises(UserError):
        build_buffer(_config(tiny_fashion_root, out, "num_experts=2", "recipe.lr=0.1"), progress=False)


def test_experts_command_trains_and_inspects(local_ray, tmp_path, tiny_fashion_root, capsys):
    from pdd_ray.cli import main
    out = tmp_path / "cli"
    assert main(["experts", "--config", "default", "--data-root", str(tiny_fashion_root), "--out", str(out),
                 "--num-experts", "1", "track_forgetting=true", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "trained 1 expert(s); 1 complete" in printed and "random" in printed
    assert (out / "forgetting.safetensors").is_file()
