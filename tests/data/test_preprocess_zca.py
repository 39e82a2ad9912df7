"""ZCA as the reference code does it: kornia ZCAWhitening(eps=0.1, compute_inv=True) on raw [0,1] pixels.

The expected whitening is built here from its definition: centre by the
per-feature mean, unbiased covariance (N - 1, kornia's default), its SVD
U S U^T, W = U diag(1/sqrt(S + eps)) U^T, y = (x - mean) W.
"""

import torch
from kornia.enhance import ZCAWhitening
from safetensors.torch import load_file, save_file

from pdd_ray.data.preprocess import ZCA_EPS, Preprocessor


def reference_zca(x: torch.Tensor, eps: float = 0.1):
    flat = x.flatten(1).double()
    mean = flat.mean(0, keepdim=True)
    centred = flat - mean
    cov = centred.T @ centred / (flat.shape[0] - 1)
    U, S, _ = torch.linalg.svd(cov)
    W = U @ torch.diag(1.0 / torch.sqrt(S + eps)) @ U.T
    return ((centred @ W).reshape(x.shape)).float(), mean, W


def correlated(n=300, c=3, h=4, w=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, h, w, generator=gen)
    x = 0.6 * base + 0.4 * base.roll(1, dims=3)
    return x * torch.tensor([1.0, 0.7, 0.4]).view(1, c, 1, 1)[:, :c]  # channels of different scale


def test_zca_matches_its_definition_and_kornia_on_raw_pixels():
    x = correlated()
    pre = Preprocessor.fit(x, mean=[0.3, 0.2, 0.1], std=[0.2, 0.3, 0.4], zca=True)
    y = pre(x)
    expected, mean, W = reference_zca(x, ZCA_EPS)
    assert torch.allclose(y, expected, atol=1e-4)
    assert torch.allclose(pre.zca["mean_vector"].double(), mean, atol=1e-6)
    assert torch.allclose(pre.zca["transform"].double(), W, atol=1e-4)
    kornia_out = ZCAWhitening(eps=0.1, compute_inv=True).fit(x)(x)
    assert torch.allclose(y, kornia_out, atol=1e-5)


def test_no_mean_std_normalisation_before_zca():
    x = correlated(seed=1)
    a = Preprocessor.fit(x, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], zca=True)
    b = Preprocessor.fit(x, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0], zca=True)
    # mean/std play no part once ZCA is on: both fits and outputs agree exactly
    assert torch.equal(a(x), b(x))
    # ...and they differ from whitening the normalised pixels (the old behaviour)
    normalised = (x - 0.5) / 0.25
    old = ZCAWhitening(eps=0.1, compute_inv=True).fit(normalised)(normalised)
    assert not torch.allclose(a(x), old, atol=1e-2)
    assert a.normalise is False and a.describe()["normalise"] is False
    assert a.describe()["zca_fit_on"] == "pixels"


def test_inverse_maps_back_to_pixels():
    x = correlated(seed=2)
    pre = Preprocessor.fit(x, mean=[0.5] * 3, std=[0.25] * 3, zca=True)
    assert torch.allclose(pre.inverse(pre(x)), x, atol=1e-4)


def test_without_zca_mean_std_normalisation_still_applies():
    x = correlated(seed=3)
    pre = Preprocessor.fit(x, mean=[0.5] * 3, std=[0.25] * 3, zca=False)
    assert pre.normalise is True and pre.describe()["zca_fit_on"] is None
    assert torch.allclose(pre(x), (x - 0.5) / 0.25)


def test_round_trip_through_safetensors_keeps_the_mode(tmp_path):
    x = correlated(seed=4)
    for zca in (False, True):
        pre = Preprocessor.fit(x, mean=[0.5] * 3, std=[0.25] * 3, zca=zca)
        save_file(pre.to_tensors(), str(tmp_path / "p.safetensors"))
        again = Preprocessor.from_tensors(load_file(str(tmp_path / "p.safetensors")))
        assert again.normalise == pre.normalise and torch.equal(again(x), pre(x))
        assert again.describe() == pre.describe()


def test_files_from_before_the_change_read_as_normalise_then_zca():
    x = correlated(seed=5)
    pre = Preprocessor.fit(x, mean=[0.5] * 3, std=[0.25] * 3, zca=True)
    legacy = {k: v for k, v in pre.to_tensors().items() if k != "normalise"}
    old = Preprocessor.from_tensors(legacy)
    assert old.normalise is True
    z = torch.randn(4, 3, 4, 4)
    assert torch.allclose(old.inverse(z), pre.inverse(z) * 0.25 + 0.5, atol=1e-5)
