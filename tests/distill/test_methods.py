"""The base-method registry: presets merge under overrides; a new method is one class and one registration."""

import pytest
import torch

from pdd_ray.config import load_config
from pdd_ray.distill.base import Contribution
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.gradient_matching import PRESETS
from pdd_ray.distill.methods import METHODS, BaseMethod, create_method
from pdd_ray.errors import UserError


def _config(*overrides):
    return load_config(DistillConfig, None, ["device=cpu", *overrides])


def test_registry_holds_the_four_bases_and_names_them_on_a_typo():
    assert METHODS.names() == ["dc", "dsa", "idc", "mtt"]
    assert create_method("mtt").needs_experts and create_method("mtt").learns_lr
    assert not any(create_method(n).needs_experts or create_method(n).learns_lr for n in ("idc", "dsa", "dc"))
    with pytest.raises(UserError, match="unknown method 'mtx'; choose one of: dc, dsa, idc, mtt"):
        _config("method=mtx")


@pytest.mark.parametrize("name", ["idc", "dsa", "dc"])
def test_each_gradient_matching_method_starts_from_its_own_preset(name):
    assert _config(f"method={name}").gm == PRESETS[name]


def test_an_override_merges_onto_the_methods_preset_instead_of_replacing_it():
    config = _config("method=dsa", "gm.lr_img=0.05")
    assert config.gm == PRESETS["dsa"].replace(lr_img=0.05)  # DSA with that lr, not IDC
    assert config.gm.layers == "all" and config.gm.factor == 1


def test_a_yaml_section_merges_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: dc\ngm:\n  batch_real: 32\n")
    config = load_config(DistillConfig, path, ["gm.net_updates=3"])
    assert config.gm == PRESETS["dc"].replace(batch_real=32, net_updates=3)


def test_method_specific_checks_live_with_the_method():
    with pytest.raises(UserError, match="method=dsa needs augment.dsa=true"):
        _config("method=dsa", "augment.dsa=false")
    with pytest.raises(UserError, match="parallel.split=batch is for method=mtt"):
        _config("method=idc", "parallel.split=batch")
    _config("method=dc", "augment.dsa=false")  # DC runs without augmentation


def test_dc_matches_without_augmentation_and_dsa_with_it():
    assert create_method("dc").augment(_config("method=dc")) is None
    assert create_method("dsa").augment(_config("method=dsa")) is not None


def test_fingerprint_holds_only_the_methods_own_section():
    from pdd_ray.distill.driver import config_fingerprint
    mtt, idc = _config("method=mtt"), _config("method=idc")
    assert config_fingerprint(mtt) == config_fingerprint(_config("method=mtt", "gm.lr_img=0.5"))
    assert config_fingerprint(idc) == config_fingerprint(_config("method=idc", "mtt.lr_img=5"))
    assert config_fingerprint(idc) != config_fingerprint(_config("method=idc", "gm.lr_img=0.5"))


class _PullToZero:
    """A matcher double: the loss is the squared norm of the new images."""

    def plan(self, iteration, generator):
        return [None]

    def contribution(self, state, item):
        return Contribution(float(state.images.detach().pow(2).sum()), 2 * state.images.detach())

    def after_iteration(self, state, iteration, generator):
        pass


class _Toy(BaseMethod):
    name = "toy"
    section = "gm"  # reuses a section: a real method would own one of its own

    def preset(self):
        return {"gm": {"lr_img": 0.25}}

    def build_matcher(self, ctx):
        return _PullToZero()


def test_a_new_method_is_one_class_and_one_registration(monkeypatch, tmp_path, tiny_fashion_root):
    from pdd_ray.jobs.run import run_pdd
    from pdd_ray import synset as synset_io
    monkeypatch.setitem(METHODS._items, "toy", _Toy())
    config = _config("method=toy", f"data.root={tiny_fashion_root}", f"out={tmp_path / 'toy'}", "data.val_size=40",
                     "model.width=4", "model.depth=2", "augment.dsa=false", "stages.num_stages=2", "stages.ipc=1",
                     "stages.iterations=2", "stages.eval_every=2", "stages.eval_epochs=1", "stages.val_nets=1",
                     "eval.epochs=1", "evaluate=false")
    assert config.gm.lr_img == 0.25  # its preset merged in
    run_pdd(config, progress=False)
    synset = synset_io.load(tmp_path / "toy" / "synthetic")
    assert synset.method == "pdd:toy" and len(synset.stages) == 2
    assert [h["iteration"] for h in synset.stages[0].info["history"]] == [0, 2]
    from pdd_ray.distill.checkpoint import load_checkpoint
    tensors, _ = load_checkpoint(tmp_path / "toy" / "stages" / "stage_1.ckpt")
    # SGD lr 0.25, momentum 0.5 on |x|²: step 1 gives x/2; step 2's buffer is 0.5·2x + x = 2x, so x/2 - 0.25·2x = 0
    assert torch.allclose(tensors["images"], torch.zeros_like(tensors["images"]), atol=1e-6)
