"""Killing an MTT run mid-stage and re-running gives the same images (learned lr and its momentum included)."""

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import DataConfig, ModelConfig, load_config
from pdd_ray.data.bundle import create_dataset
from pdd_ray.distill.config import DistillConfig
from pdd_ray.experts.train import ExpertRecipe, train_expert
from pdd_ray.models import model_factory
from pdd_ray.jobs.run import run_pdd
from pdd_ray.models import ParamLayout
from pdd_ray.trajectories import TrajectoryStore

TINY = ["model.width=4", "model.depth=2", "data.val_size=40", "device=cpu", "augment.dsa=false",
        "stages.num_stages=2", "stages.ipc=1", "stages.iterations=4", "stages.eval_every=2", "stages.eval_epochs=2",
        "stages.checkpoint_every=2", "stages.transitions=false", "mtt.syn_steps=3", "mtt.expert_epochs=1",
        "mtt.max_start_epoch=1", "mtt.lr_img=10", "mtt.lr_lr=0.001", "evaluate=false"]


@pytest.fixture
def buffer(tmp_path, tiny_fashion_root):
    """Two experts written in-process (no Ray), as ``pdd-ray experts`` would."""
    data = create_dataset(DataConfig(root=str(tiny_fashion_root), val_size=40))
    make = model_factory(ModelConfig(width=4, depth=2), data.image_shape, data.num_classes, torch.device("cpu"))
    recipe = ExpertRecipe(epochs=2, lr=0.05, batch_size=64)
    store = TrajectoryStore.create(tmp_path / "buffer", dataset=data.name, preprocessing={}, model={},
                                   layout=ParamLayout.of(make()), recipe={}, num_snapshots=recipe.num_snapshots)
    for i in range(2):
        result = train_expert(i, make, (data.train.images, data.train.labels), (data.test.images, data.test.labels),
                              recipe)
        store.write_expert(i, result.snapshots, {"init": result.init})
    return tmp_path / "buffer"


def test_killed_mtt_run_resumes_to_identical_images_and_lr(tmp_path, tiny_fashion_root, buffer):
    def config(out):
        return load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={out}",
                                                 f"buffer={buffer}", *TINY])

    run_pdd(config(tmp_path / "straight"), progress=False)

    def kill(stage, it):
        if stage == 1 and it == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pdd(config(tmp_path / "killed"), progress=False, on_iteration=kill)
    run_pdd(config(tmp_path / "killed"), progress=False)
    a = synset_io.load(tmp_path / "straight" / "synthetic")
    b = synset_io.load(tmp_path / "killed" / "synthetic")
    assert len(b.stages) == 2
    for sa, sb in zip(a.stages, b.stages):
        assert torch.equal(sa.images, sb.images) and sa.lr == sb.lr
    assert a.stages[1].lr != 0.01  # the lr was really learned, so its restore mattered


def test_a_killed_bf16_run_resumes_in_bf16_and_refuses_fp32(tmp_path, tiny_fashion_root, buffer):
    """The precision resolved at the start is recorded; ``auto`` on resume keeps it, a different one is refused."""
    import json

    from pdd_ray.errors import UserError

    def config(out, precision):
        return load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={out}",
                                                 f"buffer={buffer}", *TINY, f"precision={precision}"])

    run_pdd(config(tmp_path / "straight", "bf16"), progress=False)

    def kill(stage, it):
        if stage == 1 and it == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pdd(config(tmp_path / "killed", "bf16"), progress=False, on_iteration=kill)
    assert json.loads((tmp_path / "killed" / "precision.json").read_text())["precision"] == "bf16"
    with pytest.raises(UserError, match="started with precision=bf16"):
        run_pdd(config(tmp_path / "killed", "fp32"), progress=False)
    run_pdd(config(tmp_path / "killed", "auto"), progress=False)
    a = synset_io.load(tmp_path / "straight" / "synthetic")
    b = synset_io.load(tmp_path / "killed" / "synthetic")
    fp32 = synset_io.load(_fp32_run(tmp_path, config))
    for sa, sb in zip(a.stages, b.stages):
        assert torch.equal(sa.images, sb.images) and sa.lr == sb.lr  # resumed in bf16: bit-identical
    # bf16 really ran: the lr learned along the way differs from an fp32 run's (the tiny run's best iterate
    # may be its first, so the stored images need not)
    lrs = [[check['lr'] for check in s.info['history']] for s in (a.stages[1], fp32.stages[1])]
    assert lrs[0] != lrs[1]


def _fp32_run(tmp_path, config):
    run_pdd(config(tmp_path / "fp32", "fp32"), progress=False)
    return tmp_path / "fp32" / "synthetic"


def test_run_stages_resolves_an_auto_precision_a_caller_left_unsettled(tmp_path, tiny_fashion_root, buffer):
    """Callers below ``run_pdd`` (continual memories) may hand ``auto`` straight to the driver."""
    from pdd_ray.distill.driver import run_stages
    from pdd_ray.precision import resolve_precision

    config = load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'auto'}",
                                               f"buffer={buffer}", *TINY, "precision=auto", "stages.num_stages=1"])
    synset = run_stages(config, create_dataset(config.data), torch.device("cpu"), progress=False)
    assert len(synset.stages) == 1
    fixed = load_config(DistillConfig, None, [f"data.root={tiny_fashion_root}", f"out={tmp_path / 'fixed'}",
                                              f"buffer={buffer}", *TINY, "stages.num_stages=1",
                                              f"precision={resolve_precision('auto', 'cpu')}"])
    same = run_stages(fixed, create_dataset(fixed.data), torch.device("cpu"), progress=False)
    assert torch.equal(synset.stages[0].images, same.stages[0].images)  # auto ran as what it resolves to here
