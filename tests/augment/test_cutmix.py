"""CutMix as IDC's train_epoch applies it (pdd_ray.augment.cutmix)."""

import math

import torch
import torch.nn.functional as F

from pdd_ray.augment.cutmix import apply_box, cutmix_loss, draw_box, mix_batch, mixed_cross_entropy


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_box_side_is_int_size_sqrt_one_minus_lam_clipped():
    for seed in range(50):
        g = gen(seed)
        lam = float(torch.rand((), generator=gen(seed)))  # Beta(1, 1): the first draw of the same stream
        box = draw_box(4, 20, 28, g)
        cut_h, cut_w = int(20 * math.sqrt(1 - lam)), int(28 * math.sqrt(1 - lam))
        assert 0 <= box.y0 <= box.y1 <= 20 and 0 <= box.x0 <= box.x1 <= 28
        assert box.y1 - box.y0 <= 2 * (cut_h // 2) and box.x1 - box.x0 <= 2 * (cut_w // 2)
        assert box.ratio(20, 28) == 1 - (box.y1 - box.y0) * (box.x1 - box.x0) / (20 * 28)


def test_box_is_pasted_from_the_permuted_batch():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 6, 6).clone()
    box = draw_box(4, 6, 6, gen(3))
    out = apply_box(x, box)
    inside = out[:, 0, box.y0:box.y1, box.x0:box.x1]
    assert torch.equal(inside, x[box.perm][:, 0, box.y0:box.y1, box.x0:box.x1])
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[box.y0:box.y1, box.x0:box.x1] = False
    assert torch.equal(out[:, 0][:, mask], x[:, 0][:, mask]) and torch.equal(x[:, 0, 0, 0], torch.arange(4.0))


def test_loss_mixes_labels_by_area_and_p_zero_is_plain():
    logits = torch.randn(5, 3, generator=gen(0))
    y, y_b = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 1, 0, 2, 2])
    expect = 0.7 * F.cross_entropy(logits, y) + 0.3 * F.cross_entropy(logits, y_b)
    torch.testing.assert_close(mixed_cross_entropy(logits, y, y_b, 0.7), expect)
    x = torch.randn(5, 1, 6, 6, generator=gen(1))
    same, y_same, ratio = mix_batch(x, y, 0.0, gen(2))
    assert same is x and y_same is y and ratio == 1.0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    loss, _ = cutmix_loss(model, x, y, 0.0, gen(2))
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    mixed, y_mixed, ratio = mix_batch(x, y, 1.0, gen(2))
    assert ratio < 1.0 and not torch.equal(mixed, x)
