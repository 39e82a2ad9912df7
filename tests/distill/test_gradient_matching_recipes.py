"""Every IDC / DSA / DC recipe in tune_configs/ holds the official hyper-parameters."""

from pathlib import Path

import pytest

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.gradient_matching import DSA_ITERATIONS, DSA_LOOPS, IDC_INNER_LOOP, IDC_NITER, idc_net_updates

TUNE = Path(__file__).parents[2] / "tune_configs"
DATASETS = ("fashion_mnist", "cifar10")
# distill_idc.py --reproduce (misc/reproduce.py): metric, lr_img (pixel space, before tune_lr_img), n_data
IDC_FACTS = {"fashion_mnist": ("l1", 1e-4, 500), "cifar10": ("mse", 5e-3, 2000)}


def _load(name: str) -> DistillConfig:
    return load_config(DistillConfig, TUNE / name)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_idc_recipe(dataset, ipc):
    c = _load(f"idc_{dataset}_ipc{ipc}.yaml")
    metric, lr, n_data = IDC_FACTS[dataset]
    gm = c.gm
    assert c.method == "idc" and (c.stages.num_stages, c.stages.ipc) == (1, ipc)
    assert c.stages.iterations == IDC_NITER * IDC_INNER_LOOP and gm.net_reset_every == IDC_INNER_LOOP
    assert (gm.distance, gm.lr_img, gm.net_updates, gm.factor) == (metric, lr, idc_net_updates(n_data), 2)
    assert (gm.image_space, gm.lr_img_tune, gm.clamp, gm.layers) == ("pixel", True, True, "conv")
    assert (gm.batch_real, gm.batch_syn_max, gm.net_batch, gm.net_cutmix) == (64, 128, 64, 0.5)
    assert (gm.match_augment, gm.match_mode, gm.match_batch, gm.net_augment) == ("color_crop_cutout", "idc", True,
                                                                                 "color_crop")
    assert (c.eval.batch_size, c.eval.schedule, c.eval.cutmix, c.eval.lr, c.eval.epochs) == (64, "multistep", 0.5,
                                                                                            0.01, 1000)
    assert (c.augment.strategy, c.augment.mode) == ("color_crop_flip_scale_rotate", "idc")
    assert c.data.zca is False and c.model.width == 128


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("total,per_stage", [(10, 2), (50, 10)])
def test_pdd_idc_recipe(dataset, total, per_stage):
    c = _load(f"pdd_idc_{dataset}_ipc{total}.yaml")
    metric, lr, n_data = IDC_FACTS[dataset]
    assert (c.stages.num_stages, c.stages.ipc) == (5, per_stage)  # PDD README: 5 intervals, --ipc 2 / 10
    assert c.stages.iterations == IDC_NITER * IDC_INNER_LOOP
    assert (c.gm.distance, c.gm.lr_img, c.gm.net_updates) == (metric, lr, idc_net_updates(n_data))
    assert (c.gm.warmup, c.gm.warmup_epochs) == ("progressive", 200)  # train_only(epochs=args.epochs / 5)
    assert (c.eval.mode, c.eval.epochs, c.eval.schedule, c.eval.batch_size) == ("progressive", 500, "multistep", 64)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("ipc", [1, 10, 50])
@pytest.mark.parametrize("method", ["dsa", "dc"])
def test_dsa_dc_recipe(method, dataset, ipc):
    c = _load(f"{method}_{dataset}_ipc{ipc}.yaml")
    outer, inner = DSA_LOOPS[ipc]
    gm = c.gm
    assert c.method == method and (c.stages.num_stages, c.stages.ipc) == (1, ipc)
    assert (gm.net_reset_every, gm.net_updates, gm.net_data) == (outer, inner, "synthetic")
    assert c.stages.iterations == (DSA_ITERATIONS + 1) * outer
    assert (gm.lr_img, gm.batch_real, gm.net_batch, gm.net_lr, gm.net_momentum) == (0.1, 256, 256, 0.01, 0.0)
    assert (gm.distance, gm.layers, gm.factor, gm.image_space) == ("dc", "all", 1, "normalised")
    assert c.augment.dsa is (method == "dsa") and gm.match_batch
    assert (c.eval.epochs, c.eval.batch_size, c.eval.schedule, c.eval.lr) == (1000 if method == "dsa" else 300, 256,
                                                                              "official", 0.01)
