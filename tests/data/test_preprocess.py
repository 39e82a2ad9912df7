import torch

from pdd_ray.data.preprocess import Preprocessor


def test_normalisation_round_trips_and_centres():
    x = torch.rand(50, 3, 6, 6)
    pre = Preprocessor.fit(x, mean=x.mean((0, 2, 3)).tolist(), std=x.std((0, 2, 3)).tolist(), zca=False)
    y = pre(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(pre.inverse(y), x, atol=1e-6)
    assert pre.zca is None and pre.describe()["zca"] is False


def test_zca_whitens_round_trips_and_survives_serialisation():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(400, 1, 4, 4, generator=gen)
    x = 0.5 * base + 0.5 * base.roll(1, dims=3)  # correlated neighbouring pixels
    pre = Preprocessor.fit(x, [0.5], [0.25], zca=True)
    y = pre(x)
    # ZCA with eps on raw pixels (no mean/std first): cov(y) = U diag(l / (l + eps)) U^T where cov(x) = U diag(l) U^T
    lam, U = torch.linalg.eigh(torch.cov(x.flatten(1).T).double())
    expected = U @ torch.diag(lam / (lam + 0.1)) @ U.T
    assert torch.allclose(torch.cov(y.flatten(1).T).double(), expected, atol=1e-3)
    assert torch.allclose(pre.inverse(y), x, atol=1e-4)
    again = Preprocessor.from_tensors(pre.to_tensors())
    assert torch.equal(again(x), y)
    assert again.describe() == pre.describe() and again.describe()["zca_eps"] == 0.1


def test_batched_zca_equals_unbatched():
    x = torch.rand(100, 3, 4, 4)
    pre = Preprocessor.fit(x, [0.5] * 3, [0.2] * 3, zca=True)
    assert torch.allclose(pre(x, batch_size=7), pre(x, batch_size=1000), atol=1e-6)
