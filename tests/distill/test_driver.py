"""The PDD driver end to end on tiny data with the gradient-matching (IDC) base: no Ray needed."""

import json

import pytest
import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.jobs.run import run_pdd

TINY = ["method=idc", "model.width=4", "model.depth=2", "data.val_size=40", "device=cpu", "augment.dsa=false",
        "stages.num_stages=2", "stages.ipc=1", "stages.iterations=4", "stages.eval_every=2",
        "stages.eval_epochs=2", "stages.checkpoint_every=2", "gm.batch_real=8", "gm.net_updates=1",
        "gm.net_reset_every=3", "gm.factor=2", "eval.runs=1", "eval.epochs=2"]


def _config(root, out, *extra):
    return load_config(DistillConfig, None, [f"data.root={root}", f"out={out}", *TINY, *extra])


def test_run_writes_stages_report_and_keeps_earlier_stages_bit_identical(tmp_path, tiny_fashion_root):
    stage_one = {}

    def remember(stage, it):
        if stage == 1 and not stage_one:
            stage_one["images"] = synset_io.load(tmp_path / "run" / "synthetic").stages[0].images.clone()

    summary = run_pdd(_config(tiny_fashion_root, tmp_path / "run"), progress=False, on_iteration=remember)
    synset = synset_io.load(tmp_path / "run" / "synthetic")
    assert len(synset.stages) == 2 and summary["stages"] == 2
    assert torch.equal(synset.stages[0].images, stage_one["images"])  # conditioning never touched S_1
    assert synset.stages[1].info["factor"] == 2 and synset.stages[1].images.shape == (10, 1, 28, 28)
    assert synset.stages[0].training_data()[0].shape == (40, 1, 28, 28)  # 2x2 multi-formation decoded
    for name in ("metrics.json", "report.md", "accuracy_vs_stage.png", "synthetic/stage_1.png",
                 "synthetic/stage_2.png"):
        assert (tmp_path / "run" / name).is_file(), name
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["pdd"]["per_phase_mean"]) == 2 and metrics["random_real"]["runs"] == 1
    assert metrics["total_ipc"] == 2 and "validation split" in metrics["protocol"]
    assert "random real images" in (tmp_path / "run" / "report.md").read_text()


def test_killed_run_resumes_to_identical_images_and_never_redoes_stages(tmp_path, tiny_fashion_root):
    straight = _config(tiny_fashion_root, tmp_path / "straight", "evaluate=false")
    run_pdd(straight, progress=False)

    def kill(stage, it):
        if stage == 1 and it == 3:
            raise KeyboardInterrupt

    killed = _config(tiny_fashion_root, tmp_path / "killed", "evaluate=false")
    with pytest.raises(KeyboardInterrupt):
        run_pdd(killed, progress=False, on_iteration=kill)
    assert len(synset_io.load(tmp_path / "killed" / "synthetic").stages) == 1
    seen = []
    run_pdd(killed, progress=False, on_iteration=lambda s, it: seen.append((s, it)))
    assert seen[0] == (1, 3)  # resumed inside stage 2 from the checkpoint at iteration 2; stage 1 not redone
    a = synset_io.load(tmp_path / "straight" / "synthetic")
    b = synset_io.load(tmp_path / "killed" / "synthetic")
    for sa, sb in zip(a.stages, b.stages):
        assert torch.equal(sa.images, sb.images)
    again = []
    run_pdd(killed, progress=False, on_iteration=lambda s, it: again.append(it))
    assert again == []  # everything finished: nothing recomputed


def test_matching_never_changes_the_frozen_earlier_stage(tmp_path, tiny_fashion_root, monkeypatch):
    import pdd_ray.distill.runners as driver  # the in-process runner calls the stage loop
    seen = []
    real = driver.distill_stage

    def spy(state, *args, **kwargs):
        before = state.frozen_images.clone()
        outcome = real(state, *args, **kwargs)
        seen.append(torch.equal(before, state.frozen_images) and len(before))
        return outcome

    monkeypatch.setattr(driver, "distill_stage", spy)
    run_pdd(_config(tiny_fashion_root, tmp_path / "f", "evaluate=false"), progress=False)
    assert seen == [0, 10]  # stage 1 has nothing frozen; stage 2's 10 frozen images are untouched


def test_changed_config_does_not_mix_into_an_existing_run(tmp_path, tiny_fashion_root):
    from pdd_ray.errors import UserError
    out = tmp_path / "r"
    run_pdd(_config(tiny_fashion_root, out, "evaluate=false", "stages.num_stages=1"), progress=False)
    with pytest.raises(UserError, match="different config"):
        run_pdd(_config(tiny_fashion_root, out, "evaluate=false", "stages.num_stages=1", "gm.lr_img=0.5"),
                progress=False)


def test_without_conditioning_stage_two_ignores_stage_one(tmp_path, tiny_fashion_root, monkeypatch):
    import pdd_ray.distill.runners as driver  # the in-process runner calls the stage loop
    frozen_sizes = []
    real = driver.distill_stage

    def spy(state, *args, **kwargs):
        frozen_sizes.append(len(state.frozen_images))
        return real(state, *args, **kwargs)

    monkeypatch.setattr(driver, "distill_stage", spy)
    run_pdd(_config(tiny_fashion_root, tmp_path / "c", "evaluate=false"), progress=False)
    run_pdd(_config(tiny_fashion_root, tmp_path / "nc", "evaluate=false", "stages.conditioning=false"),
            progress=False)
    assert frozen_sizes == [0, 10, 0, 0]


def test_bad_run_configs_fail_before_compute():
    from pdd_ray.errors import UserError
    cases = [(["method=kip"], "unknown method .kip.; choose one of"), (["stages.ipc=0"], "stages.ipc"),
             (["mtt.syn_steps=0"], "syn_steps"), (["method=idc", "gm.distance=cosine"], "distance"),
             (["data.val_size=0"], "val_size"), (["device=gpu"], "device must be"),
             (["method=dsa", "augment.dsa=false"], "method=dc"),
             (["experts.recipe.epochs=5"], "matching needs 23"),
             (["experts.device=cuda"], "gpus_per_expert"),
             (["stages.forgetting_curriculum=true"], "track_forgetting"),
             (["method=idc", "stages.forgetting_curriculum=true"], "buffer=")]
    for overrides, fragment in cases:
        with pytest.raises(UserError, match=fragment):
            load_config(DistillConfig, None, overrides)


def test_a_buffer_uri_is_resolved_through_the_storage_layer(tmp_path, tiny_fashion_root):
    from pdd_ray.distill.transitions import expert_dir
    (tmp_path / "buffer").mkdir()
    config = _config(tiny_fashion_root, tmp_path / "run", "method=mtt", f"buffer=file://{tmp_path / 'buffer'}")
    assert expert_dir(config, 0) == tmp_path / "buffer"  # file:// is read in place, s3:// etc. mirrored
    assert expert_dir(config, 1) == tmp_path / "run" / "experts" / "stage_2"
